"""Kafka down: 503 + AE + Retry-After, nothing acknowledged; Kafka back: the edge recovers alone.

Uses its own broker (``LocalKafka``) so stopping it cannot disturb other tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from processor.kafka.local_broker import LocalKafka
from tests.builders import SEED_PASSWORD, SEED_USER, basic
from tests.corpus import seed_message
from tests.integration.edge.conftest import RunningEdge, start_edge, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HEADERS = {"Content-Type": "application/hl7-v2", "Authorization": basic(SEED_USER, SEED_PASSWORD)}


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka"), port=0)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def segments(resp: httpx.Response) -> dict[str, list[str]]:
    return {s.split("|")[0]: s.split("|") for s in resp.content.decode().split("\r") if s}


def test_outage_gives_503_and_recovery_needs_no_restart(own_broker: LocalKafka, tmp_path: Path) -> None:
    edge: RunningEdge = start_edge(own_broker.bootstrap, tmp_path, publish_timeout_seconds=3.0)
    try:
        with httpx.Client(base_url=edge.url, timeout=60) as client:
            first = client.post("/hl7", content=seed_message(control_id=b"UP1"), headers=HEADERS)
            assert first.status_code == 200 and segments(first)["MSA"][1] == "AA"

            own_broker.stop()
            down = client.post("/hl7", content=seed_message(control_id=b"DOWN1"), headers=HEADERS)
            assert down.status_code == 503
            assert int(down.headers["retry-after"]) > 0
            assert segments(down)["MSA"][1:3] == ["AE", "DOWN1"]
            enhanced = seed_message(control_id=b"DOWN2").replace(b"|P|2.4\r", b"|P|2.4|||AL|NE\r")
            down2 = client.post("/hl7", content=enhanced, headers=HEADERS)
            assert down2.status_code == 503 and segments(down2)["MSA"][1] == "CE"
            # SPEC 4: the edge stays ready while Kafka is down, so the load balancer keeps
            # sending it requests and partners get the edge's own 503 + AE, not the LB's.
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"registry": True}

            own_broker.start()
            deadline = time.monotonic() + 120
            while True:
                back = client.post("/hl7", content=seed_message(control_id=b"UP2"), headers=HEADERS)
                if back.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            assert back.status_code == 200 and segments(back)["MSA"][1] == "AA"
            assert client.get("/readyz").status_code == 200

        stored = [m.value() for m in edge.reader.all()]
        assert seed_message(control_id=b"UP1") in stored
        assert seed_message(control_id=b"UP2") in stored
        # the refused messages were never sent: nothing was acknowledged for them
        assert all(b"|DOWN1|" not in v and b"|DOWN2|" not in v for v in stored)
    finally:
        edge.stop()
