"""deploy/healthcheck.py: the container probe answers like Docker's HEALTHCHECK expects.

Served by a real HTTP server on loopback (no external network).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hl7_healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe_module = _load_probe()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        status = {"/livez": 200, "/readyz": 503}.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def alive_not_ready() -> Iterator[int]:
    """A process that is alive (/livez 200) but not ready (/readyz 503)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _unused_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()
    return port


def test_ports_come_from_the_apps_settings_edge_first() -> None:
    assert probe_module.candidate_ports({}) == [8080, 9464]
    assert probe_module.candidate_ports({"HL7_EDGE_PORT": "8081", "HL7_METRICS_PORT": "9999"}) == [8081, 9999]
    assert probe_module.candidate_ports({"HL7_EDGE_PORT": "junk", "HL7_METRICS_PORT": "9464"}) == [9464]


def test_healthy_when_the_path_answers_200(alive_not_ready: int) -> None:
    assert probe_module.probe("/livez", [alive_not_ready]) is True


def test_unhealthy_on_503_or_no_listener(alive_not_ready: int) -> None:
    assert probe_module.probe("/readyz", [alive_not_ready]) is False
    assert probe_module.probe("/livez", [_unused_port()]) is False


def test_processor_container_is_found_on_its_metrics_port(alive_not_ready: int) -> None:
    # In a processor container nothing listens on the edge port; the metrics port answers.
    assert probe_module.probe("/livez", [_unused_port(), alive_not_ready]) is True


def test_exit_codes(alive_not_ready: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL7_EDGE_PORT", str(_unused_port()))
    monkeypatch.setenv("HL7_METRICS_PORT", str(alive_not_ready))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # must be ignored for loopback probes
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    assert probe_module.main([]) == 0
    assert probe_module.main(["/livez"]) == 0
    assert probe_module.main(["/readyz"]) == 1
    assert probe_module.main(["livez"]) == 2
