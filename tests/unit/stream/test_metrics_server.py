"""/metrics, /livez and /readyz of the processor process (local HTTP only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from processor.health import Readiness
from processor.stream.lag import compute_lag
from processor.stream.metrics_server import start_metrics_server


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def state():
    return {"live": True, "ready": False}


@pytest.fixture
def server(state):
    readiness = Readiness()
    readiness.add("stream_loop", lambda: state["ready"])
    srv = start_metrics_server(0, live=lambda: state["live"], readiness=readiness, host="127.0.0.1")
    yield srv
    srv.close()


def test_metrics_exposes_processor_series(server) -> None:
    status, body = get(server.port, "/metrics")
    assert status == 200
    assert b"hl7_processor_transactions_total" in body or b"hl7_processor_end_to_end_seconds" in body


def test_probes_follow_state(server, state) -> None:
    assert get(server.port, "/livez")[0] == 200
    assert get(server.port, "/healthz")[0] == 200
    status, body = get(server.port, "/readyz")
    assert status == 503 and json.loads(body)["checks"] == {"stream_loop": False}
    state["ready"] = True
    assert get(server.port, "/readyz")[0] == 200
    state["live"] = False
    assert get(server.port, "/livez")[0] == 503
    assert get(server.port, "/nope")[0] == 404


def test_compute_lag() -> None:
    assert compute_lag(100, 40) == 60
    assert compute_lag(100, 100) == 0
    assert compute_lag(-1001, 5) is None
    assert compute_lag(10, -1001) is None
