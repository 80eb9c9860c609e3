"""Proving that nothing happened, against a committed marker instead of a timeout.

"Read until N records, then wait a second more" passes when a stray record arrives after
that second. Instead, once the operation under test has returned:

1. produce a *sentinel* record (header ``test.sentinel``) to every partition of the topic
   the operation would have written to, and learn its offset from the delivery report;
2. read that topic ``read_committed`` from the start until each partition has delivered its
   sentinel. Whatever the operation committed before returning sits below the sentinel, and
   a transaction it left open holds the read at the open transaction's first offset until
   it commits (seen) or aborts (rightly skipped): nothing can slip past;
3. assert on the records before the sentinels.

For a processor's outputs the sentinel goes *through the pipeline*:
:func:`outputs_through_sentinel` writes one raw sentinel per raw partition; the processor
dead-letters it (no ``hl7.*`` headers: MISSING_METADATA) carrying the ``test.sentinel``
header over. Outputs of every raw record before a sentinel were committed in the same or an
earlier transaction, so once every sentinel's dead letter is visible, a fresh
``read_committed`` read of the output topics to their end holds every output there is.
Sentinel records are left out of what these helpers return.

What this cannot catch: a writer that publishes *later* on its own (a background retry in a
producer the test does not own) is still a race; that is the operation's contract, not the
read's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from processor.config import Settings
from tests.integration.stream.stream_kit import OutRecord

__all__ = [
    "SENTINEL_HEADER",
    "is_sentinel",
    "partition_count",
    "produce_sentinels",
    "records_through_sentinel",
    "outputs_through_sentinel",
]

SENTINEL_HEADER = "test.sentinel"


def is_sentinel(headers: Iterable[tuple[str, bytes | None]] | None) -> bool:
    return any(name == SENTINEL_HEADER for name, _ in headers or ())


def _consumer(bootstrap: str, **extra: object) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"sentinel-{uuid.uuid4().hex}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 32 * 1024 * 1024,
        **extra,
    })


def _partitions(bootstrap: str, topic: str) -> list[int]:
    consumer = _consumer(bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        assert meta.error is None, meta.error
        return sorted(meta.partitions)
    finally:
        consumer.close()


def partition_count(bootstrap: str, topic: str) -> int:
    """How many partitions ``topic`` has (= sentinels one ``*_through_sentinel`` call writes)."""
    return len(_partitions(bootstrap, topic))


def produce_sentinels(bootstrap: str, topic: str, partitions: Sequence[int] | None = None) -> dict[int, int]:
    """One sentinel per partition (all by default); returns ``{partition: offset}``."""
    parts = list(partitions) if partitions is not None else _partitions(bootstrap, topic)
    tag = uuid.uuid4().hex.encode()
    offsets: dict[int, int] = {}
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            offsets[msg.partition()] = msg.offset()

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for partition in parts:
        producer.produce(topic, value=b"sentinel", partition=partition,
                         headers=[(SENTINEL_HEADER, tag)], on_delivery=delivered)
    assert producer.flush(30) == 0 and not errors, errors
    assert set(offsets) == set(parts)
    return offsets


def records_through_sentinel(
    bootstrap: str, topic: str, *, partitions: Sequence[int] | None = None, timeout: float = 60.0
) -> list[Message]:
    """Every committed record of ``topic`` (the given partitions, default all) written before
    a sentinel produced now; sentinels themselves (this one and earlier ones) left out."""
    sentinels = produce_sentinels(bootstrap, topic, partitions)
    consumer = _consumer(bootstrap)
    consumer.assign([TopicPartition(topic, p, 0) for p in sentinels])
    pending = dict(sentinels)
    seen: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while pending:
            assert time.monotonic() < deadline, (
                f"sentinel not read back from {topic} partitions {sorted(pending)} within {timeout:g} s: "
                "a transaction left open before it holds the read_committed position"
            )
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                partition, offset = msg.partition(), msg.offset()
                if partition in pending and offset >= pending[partition]:
                    del pending[partition]
                    consumer.pause([TopicPartition(topic, partition)])
                    continue
                if partition in pending and not is_sentinel(msg.headers()):
                    seen.append(msg)
    finally:
        consumer.close()
    return seen


def _raw_sentinels(settings: Settings) -> set[str]:
    """One sentinel per raw partition; the processor dead-letters each (no hl7.* headers)."""
    assert settings.kafka_bootstrap_servers
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
    tags: set[str] = set()
    for partition in _partitions(settings.kafka_bootstrap_servers, settings.topic_raw):
        tag = uuid.uuid4().hex
        tags.add(tag)
        producer.produce(settings.topic_raw, value=b"sentinel", partition=partition,
                         headers=[(SENTINEL_HEADER, tag.encode())])
    assert producer.flush(30) == 0
    return tags


def _read_to_end(bootstrap: str, topics: Sequence[str], timeout: float) -> list[Message]:
    """A fresh read_committed consumer from offset 0 to the end of every partition."""
    consumer = _consumer(bootstrap, **{"enable.partition.eof": True})
    meta = consumer.list_topics(timeout=10)
    tps = [TopicPartition(t, p, 0) for t in topics for p in meta.topics[t].partitions]
    consumer.assign(tps)
    at_end: set[tuple[str, int]] = set()
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < len(tps):
            assert time.monotonic() < deadline, f"partitions never reached their end: {tps}"
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add((msg.topic(), msg.partition()))
                    continue
                at_end.discard((msg.topic(), msg.partition()))
                out.append(msg)
    finally:
        consumer.close()
    return out


def outputs_through_sentinel(settings: Settings, *, timeout: float = 90.0) -> list[OutRecord]:
    """Every committed record of the accepted and dead-letter topics once the processor has
    routed everything produced to the raw topic before now (sentinels left out). Needs a
    processor running on ``settings.topic_raw``."""
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    topics = [settings.topic_accepted, settings.topic_deadletter]
    tags = _raw_sentinels(settings)
    deadline = time.monotonic() + timeout
    while True:
        routed = {
            v.decode() for msg in _read_to_end(bootstrap, topics, timeout)
            for k, v in (msg.headers() or []) if k == SENTINEL_HEADER and v is not None
        }
        if tags <= routed:
            break
        assert time.monotonic() < deadline, "the processor never routed the sentinel(s)"
        time.sleep(0.3)
    final = _read_to_end(bootstrap, topics, timeout)  # a fresh read, after the sentinels
    return [
        OutRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []))
        for m in final if not is_sentinel(m.headers())
    ]
