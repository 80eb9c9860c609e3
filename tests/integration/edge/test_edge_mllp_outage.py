"""MLLP with the broker stopped: AE (CE) on the same connection, nothing acknowledged, and
AA again once the broker is back, without reconnecting. Uses its own broker (``LocalKafka``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from processor.kafka.local_broker import LocalKafka
from tests.builders import adt_a01
from tests.corpus import seed_message
from tests.integration.edge.mllp_kit import MllpClient, Pki, mllp_address, segments, start_mllp_edge

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka"), port=0)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def test_outage_gives_ae_and_recovery_on_the_same_connection(own_broker: LocalKafka, tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(own_broker.bootstrap, tmp_path, pki, publish_timeout_seconds=3.0)
    try:
        with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
            assert segments(client.request(seed_message(control_id=b"UP1")))["MSA"][1:3] == ["AA", "UP1"]

            own_broker.stop()
            before = REGISTRY.get_sample_value(
                "hl7_edge_requests_total", {"transport": "mllp", "status": "503", "ack": "AE"}) or 0.0
            down = segments(client.request(seed_message(control_id=b"DOWN1")))
            assert down["MSA"][1:3] == ["AE", "DOWN1"]
            assert REGISTRY.get_sample_value(
                "hl7_edge_requests_total", {"transport": "mllp", "status": "503", "ack": "AE"}) == before + 1
            enhanced = segments(client.request(adt_a01("trustalias{trustalias}", control_id="DOWN2", msh15="AL")))
            assert enhanced["MSA"][1:3] == ["CE", "DOWN2"]

            own_broker.start()
            deadline = time.monotonic() + 120
            while True:  # same connection all along: each try is answered, AE until Kafka is back
                back = segments(client.request(seed_message(control_id=b"UP2")))
                if back["MSA"][1] == "AA" or time.monotonic() > deadline:
                    break
                assert back["MSA"][1] == "AE"
                time.sleep(1.0)
            assert back["MSA"][1:3] == ["AA", "UP2"]

        stored = [m.value() for m in edge.reader.all()]
        assert seed_message(control_id=b"UP1") in stored and seed_message(control_id=b"UP2") in stored
        assert all(b"|DOWN1|" not in v and b"|DOWN2|" not in v for v in stored)
    finally:
        edge.stop()
