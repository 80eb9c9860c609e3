"""Helpers for the stream processor's Kafka tests: raw records, read-back.

Messages and the registry come from ``tests.builders``.

Fake data only. Raw records carry the six SPEC 5 headers exactly as the edge sets
them; ``read_outputs`` reads ``hl7.accepted`` + ``hl7.deadletter`` with a
``read_committed`` consumer up to the end of every partition.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.config import Settings, load_settings
from processor.kafka.topics import ensure_topics


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def raw_headers(
    principal_id: str = "mailco",
    principal_type: str = "partner",
    *,
    ingest_id: str | None = None,
    transport: str = "http",
    received_at_us: int | None = None,
) -> list[tuple[str, bytes]]:
    return [
        ("hl7.ingest_id", (ingest_id or str(uuid.uuid4())).encode()),
        ("hl7.principal_id", principal_id.encode()),
        ("hl7.principal_type", principal_type.encode()),
        ("hl7.received_at", str(received_at_us or time.time_ns() // 1000).encode()),
        ("hl7.source_ip", b"203.0.113.7"),
        ("hl7.transport", transport.encode()),
    ]


@dataclass
class RawIn:
    value: bytes
    headers: list[tuple[str, bytes | None]]
    key: bytes | None = None


def stream_settings(bootstrap: str, unique_name, registry_file: Path | None = None, **extra) -> Settings:  # type: ignore[no-untyped-def]
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_raw=unique_name("raw"),
        topic_accepted=unique_name("accepted"),
        topic_deadletter=unique_name("deadletter"),
        consumer_group=unique_name("group"),
        transactional_id=unique_name("txn"),
        registry_file=registry_file,
        **extra,
    )
    ensure_topics(settings, partitions=extra.get("topic_partitions", 3))
    return settings


def produce_raw(settings: Settings, records: Iterable[RawIn]) -> int:
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True, "linger.ms": 20}
    )
    n = 0
    for rec in records:
        while True:
            try:
                producer.produce(settings.topic_raw, value=rec.value, key=rec.key, headers=rec.headers)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    left = producer.flush(60)
    assert left == 0, "raw records not delivered"
    return n


@dataclass
class OutRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode() if v is not None else None
        return None


def committed_total(settings: Settings) -> int:
    """Sum of the group's committed offsets on the raw topic (progress probe)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    from confluent_kafka import ConsumerGroupTopicPartitions

    md = admin.list_topics(settings.topic_raw, timeout=10).topics[settings.topic_raw]
    tps = [TopicPartition(settings.topic_raw, p) for p in md.partitions]
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(settings.consumer_group, tps)])
    total = 0
    for f in fut.values():
        for tp in f.result(timeout=10).topic_partitions:
            total += max(tp.offset, 0)
    return total


def read_outputs(settings: Settings, *, expect: int, timeout: float = 120.0) -> list[OutRecord]:
    """All committed records of accepted + deadletter, once ``expect`` were seen and every
    partition was read to its end (so extra records would be counted too)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    topics = [settings.topic_accepted, settings.topic_deadletter]
    md = consumer.list_topics(timeout=10)
    tps = [
        TopicPartition(t, p, 0) for t in topics for p in md.topics[t].partitions
    ]
    consumer.assign(tps)
    out: list[OutRecord] = []
    at_eof: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == err._PARTITION_EOF:
                        at_eof.add((msg.topic(), msg.partition()))
                    continue
                at_eof.discard((msg.topic(), msg.partition()))
                out.append(
                    OutRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                              list(msg.headers() or []))
                )
            if len(out) >= expect and len(at_eof) == len(tps):
                # Stay a little longer to catch late (duplicate) commits, then re-check EOF.
                time.sleep(1.0)
                more = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
                for msg in more:
                    out.append(OutRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                         msg.value(), list(msg.headers() or [])))
                break
    finally:
        consumer.close()
    return out


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def count_by_ingest(records: Sequence[OutRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        key = r.header("hl7.ingest_id") or ""
        counts[key] = counts.get(key, 0) + 1
    return counts
