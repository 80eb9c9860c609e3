"""/metrics, /livez and /readyz of the processor process (local HTTP only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from processor.health import Readiness
from processor.metrics import PROCESSOR_CONSUMER_LAG, PROCESSOR_END_TO_END, PROCESSOR_TRANSACTIONS
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


def sample(port: int, name: str, **labels: str) -> float:
    """One series' value as served on /metrics (0 when the series is absent)."""
    status, body = get(port, "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_metrics_serves_the_live_default_registry(server) -> None:
    """Read, act, read: the served series move with the metrics the processor updates (a
    server exporting a snapshot, another registry or a renamed series fails this; names
    alone are exported from import time and prove nothing)."""
    committed = sample(server.port, "hl7_processor_transactions_total", result="committed")
    e2e = sample(server.port, "hl7_processor_end_to_end_seconds_count")
    lag = {"partition": "913"}
    assert sample(server.port, "hl7_processor_consumer_lag", **lag) == 0.0

    PROCESSOR_TRANSACTIONS.labels(result="committed").inc()
    PROCESSOR_END_TO_END.observe(0.25)
    PROCESSOR_END_TO_END.observe(1.5)
    PROCESSOR_CONSUMER_LAG.labels(partition="913").set(7)
    try:
        assert sample(server.port, "hl7_processor_transactions_total", result="committed") == committed + 1
        assert sample(server.port, "hl7_processor_end_to_end_seconds_count") == e2e + 2
        assert sample(server.port, "hl7_processor_consumer_lag", **lag) == 7
    finally:
        PROCESSOR_CONSUMER_LAG.remove("913")


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
