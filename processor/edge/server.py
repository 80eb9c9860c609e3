"""Running the edge app on uvicorn (uvloop + httptools under ``edge.limits``), standalone or embedded.

Graceful shutdown is uvicorn's: on SIGTERM/SIGINT (or ``stop()``) it closes the
listening socket, lets in-flight requests finish (bounded by
``timeout_graceful_shutdown``), then runs the app's lifespan shutdown, which
flushes the Kafka producer within ``publish_timeout_seconds``.

Three ways in:

* ``run_edge(settings, registry_source)`` - blocking, in the main thread, signals handled
  (``hl7-processor edge``);
* ``await serve(settings, registry_source)`` - inside an already running event loop;
* ``EdgeServer(settings, registry_source).start()`` / ``.stop()`` - on a background
  thread with its own event loop (``hl7-processor run``, tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from typing import Any

import uvicorn

from processor.config import Settings
from processor.edge.app import RegistrySource, create_app
from processor.edge.limits import ConnectionLimits, guarded_protocol
from processor.edge.mllp_tls import check_mllp_settings
from processor.errors import ConfigError

__all__ = ["EdgeServer", "serve", "run_edge", "bind_socket", "bind_mllp_socket", "uvicorn_config"]

log = logging.getLogger(__name__)

# Longer than the publish timeout, so a request waiting for Kafka can still finish.
_GRACE_SLACK_S = 5.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0 = any free port); uvicorn listens on it."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock


def bind_mllp_socket(settings: Settings) -> socket.socket | None:
    """The MLLP listener's socket when ``HL7_MLLP_PORT`` is set (host: ``HL7_MLLP_HOST``, else
    the edge's), after checking its settings (``ConfigError``)."""
    if settings.mllp_port is None:
        return None
    check_mllp_settings(settings)
    return bind_socket(settings.mllp_host or settings.edge_host, settings.mllp_port)


def uvicorn_config(
    settings: Settings,
    registry_source: RegistrySource,
    *,
    bench: bool = False,
    access_log: bool = False,
    mllp_socket: socket.socket | None = None,
) -> uvicorn.Config:
    """uvicorn settings for the edge: uvloop + httptools, our logging, HTTPS when configured;
    the MLLP listener on ``mllp_socket`` when given (served from the app's lifespan)."""
    if bool(settings.edge_tls_certfile) != bool(settings.edge_tls_keyfile):
        raise ConfigError("HL7_EDGE_TLS_CERTFILE and HL7_EDGE_TLS_KEYFILE must be set together")
    app = create_app(settings, registry_source, bench=bench, mllp_socket=mllp_socket)
    limits = ConnectionLimits(
        header_timeout=settings.edge_header_timeout_seconds,
        body_min_rate=settings.edge_body_min_rate_bytes,
        body_rate_grace=settings.edge_body_rate_grace_seconds,
        max_header_count=settings.edge_max_header_count,
        max_header_bytes=settings.edge_max_header_bytes,
        max_connections=settings.edge_max_connections,
    )
    return uvicorn.Config(
        app,
        host=settings.edge_host,
        port=settings.edge_port,
        loop="uvloop",
        ws="none",  # no WebSocket upgrades: the edge speaks HTTP requests only
        http=guarded_protocol(limits),
        lifespan="on",
        access_log=access_log,
        log_config=None,  # keep the process's logging setup (cli.py configures it)
        server_header=False,
        proxy_headers=False,  # X-Forwarded-For is judged by our own trusted-proxy rule
        timeout_graceful_shutdown=int(settings.publish_timeout_seconds + _GRACE_SLACK_S),
        timeout_keep_alive=int(settings.edge_keepalive_seconds),
        # Beyond the cap a connection is accepted and answered 503; a backlog smaller than the
        # cap would instead leave a burst waiting in the kernel (SYN retries).
        backlog=max(2048, settings.edge_max_connections),
        ssl_certfile=str(settings.edge_tls_certfile) if settings.edge_tls_certfile else None,
        ssl_keyfile=str(settings.edge_tls_keyfile) if settings.edge_tls_keyfile else None,
    )


async def serve(
    settings: Settings,
    registry_source: RegistrySource,
    *,
    ready_event: asyncio.Event | None = None,
    stop_event: asyncio.Event | None = None,
    bench: bool = False,
) -> None:
    """Serve until cancelled or ``stop_event`` is set, in the running event loop."""
    mllp_sock = bind_mllp_socket(settings)
    server = uvicorn.Server(uvicorn_config(settings, registry_source, bench=bench, mllp_socket=mllp_sock))
    sock = bind_socket(settings.edge_host, settings.edge_port)

    async def watch() -> None:
        while not server.started:
            await asyncio.sleep(0.02)
        if ready_event is not None:
            ready_event.set()
        if stop_event is not None:
            await stop_event.wait()
            server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        sock.close()
        if mllp_sock is not None:
            mllp_sock.close()


def run_edge(settings: Settings, registry_source: RegistrySource, *, bench: bool = False) -> None:
    """Blocking: serve in this thread until SIGTERM/SIGINT, then shut down gracefully."""
    mllp_sock = bind_mllp_socket(settings)
    config = uvicorn_config(settings, registry_source, bench=bench, mllp_socket=mllp_sock)
    server = uvicorn.Server(config)
    sock = bind_socket(settings.edge_host, settings.edge_port)
    host, port = sock.getsockname()[:2]
    log.info("edge receiver listening on %s:%d", host, port)

    # uvicorn re-raises the signal that stopped it once it has shut down gracefully;
    # with these handlers underneath, that ends here and the command exits 0. A signal
    # arriving before uvicorn installs its own handlers still asks it to exit.
    def on_signal(signum: int, _frame: object) -> None:
        server.should_exit = True
        log.info("edge receiver stopping on signal %d", signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if mllp_sock is not None:
            mllp_sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class EdgeServer:
    """The edge on a background thread: ``start()`` returns once it accepts connections."""

    def __init__(
        self,
        settings: Settings,
        registry_source: RegistrySource,
        *,
        bench: bool = False,
        access_log: bool = False,
    ) -> None:
        self._mllp_sock = bind_mllp_socket(settings)
        try:
            self._config = uvicorn_config(
                settings, registry_source, bench=bench, access_log=access_log, mllp_socket=self._mllp_sock
            )
        except BaseException:
            if self._mllp_sock is not None:
                self._mllp_sock.close()
            raise
        self._server = uvicorn.Server(self._config)
        self._sock = bind_socket(settings.edge_host, settings.edge_port)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def mllp_address(self) -> tuple[str, int] | None:
        """Where MLLP is served (``HL7_MLLP_PORT`` set), else ``None``."""
        if self._mllp_sock is None:
            return None
        host, port = self._mllp_sock.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self._config.ssl_certfile else "http"
        return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"

    @property
    def app(self) -> Any:
        """The ASGI application served (``create_app``'s)."""
        return self._config.app

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; returns the base URL. Raises if the server did not come up."""
        self._thread = threading.Thread(target=self._run, name="edge-server", daemon=True)
        self._thread.start()
        waited = threading.Event()
        deadline = timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"edge server failed to start: {type(self._error).__name__}")
            if deadline <= 0:
                raise TimeoutError("edge server did not start in time")
            waited.wait(0.02)
            deadline -= 0.02
        return self.url

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - thread boundary (uvicorn exits by SystemExit); start()/stop() report it
            self._error = exc
            log.error("edge server stopped by %s", type(exc).__name__)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful: stop accepting, finish in-flight requests, flush Kafka, then return."""
        self._server.should_exit = True
        if self._thread is not None:
            grace = self._config.timeout_graceful_shutdown or 0
            self._thread.join(timeout if timeout is not None else grace + 15)
            self._thread = None
        self._sock.close()
        if self._mllp_sock is not None:
            self._mllp_sock.close()
