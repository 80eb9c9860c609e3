"""The async Kafka bridge against a real broker: full local queue, unreachable cluster."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from processor.config import load_settings
from processor.edge.publisher import KafkaPublisher
from processor.errors import KafkaUnavailable
from tests.integration.edge.conftest import RawReader, create_raw_topic

pytestmark = pytest.mark.kafka


def test_full_local_queue_is_waited_out_without_blocking(kafka_bootstrap: str) -> None:
    topic = f"edge-test.pub.{uuid.uuid4().hex[:12]}"
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap, topic_raw=topic)
    create_raw_topic(kafka_bootstrap, topic, settings)
    # a queue of one message: concurrent publishes must hit BufferError and retry
    publisher = KafkaPublisher(settings, **{"queue.buffering.max.messages": 1})
    publisher.start()

    async def main() -> None:
        values = [b"v%d" % i for i in range(20)]
        await asyncio.gather(*(publisher.publish(topic, b"k", v, [("h", b"1")]) for v in values))

    try:
        asyncio.run(main())
    finally:
        assert publisher.close(10) == 0
    reader = RawReader(kafka_bootstrap, topic)
    try:
        assert sorted(m.value() for m in reader.all()) == sorted(b"v%d" % i for i in range(20))
    finally:
        reader.close()


def test_unreachable_cluster_fails_within_the_publish_timeout_and_loop_stays_free() -> None:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1", topic_raw="nowhere", publish_timeout_seconds=1.0)
    publisher = KafkaPublisher(settings)
    publisher.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> None:
        task = asyncio.create_task(ticker())
        try:
            with pytest.raises(KafkaUnavailable):
                await publisher.publish("nowhere", b"k", b"v", [])
        finally:
            task.cancel()

    try:
        asyncio.run(main())
        assert ticks > 0  # the event loop ran other work while the publish waited
        assert not publisher.ready
    finally:
        publisher.close(0)
