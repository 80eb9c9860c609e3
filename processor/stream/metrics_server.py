"""``/metrics``, ``/livez`` (alias ``/healthz``) and ``/readyz`` for a processor process.

A stdlib ``ThreadingHTTPServer`` on a daemon thread: the processor has no web
framework and needs none. Probes answer from cached facts (see
:mod:`processor.health`), so scraping never touches Kafka. Binds all interfaces by
default because Prometheus scrapes from elsewhere; nothing served here carries
patient data (labels are bounded ids and codes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from processor.health import Readiness, render_status

__all__ = ["MetricsServer", "start_metrics_server"]

log = logging.getLogger(__name__)


class MetricsServer:
    """A running server; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(live: Callable[[], bool], readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hl7-processor"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/healthz"):
                ok = _safe(live)
                self._send(200 if ok else 503, b"ok\n" if ok else b"not alive\n", "text/plain")
            elif path == "/readyz":
                status, body = render_status(*readiness.status())
                self._send(status, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics http: " + format, *args)

    return Handler


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        log.exception("liveness check raised")
        return False


def start_metrics_server(
    port: int,
    *,
    live: Callable[[], bool],
    readiness: Readiness,
    host: str = "0.0.0.0",
) -> MetricsServer:
    """Serve on ``host:port`` (port 0 = any free port) from a daemon thread."""
    server = ThreadingHTTPServer((host, port), _handler(live, readiness))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info("metrics, /livez and /readyz on port %d", server.server_address[1])
    return MetricsServer(server, thread)
