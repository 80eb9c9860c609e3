"""KIP-848: processors sharing a group with ``HL7_KAFKA_GROUP_PROTOCOL=consumer``.

Two embedded processors (threads, distinct transactional ids) join one group with the
next-generation protocol (``group.protocol=consumer``: broker-side assignment, incremental
by design). Raw records are produced in chunks throughout; the second member joins while
they flow, so partitions move with records in flight. Afterwards: exactly one output per raw
record across ``hl7.accepted`` + ``hl7.deadletter``, both members owned partitions, and the
broker reports a ``consumer``-type group (not a classic group the setting failed to reach).

Needs a broker with the protocol enabled: Apache Kafka 4.0+ (KRaft), where
``group.coordinator.rebalance.protocols`` includes ``consumer`` by default. Skipped on an
older one (e.g. the testcontainers image of the session fixture).

The config tests at the end need no broker.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupType, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from processor.config import load_settings
from processor.errors import ConfigError
from processor.kafka.client_config import consumer_config
from processor.kafka.session import TxnSession
from processor.registry.loader import load_registry
from processor.stream import StreamProcessor
from tests.builders import hl7_message, registry_text
from tests.integration.stream.stream_kit import (
    RawIn,
    committed_total,
    raw_headers,
    read_outputs,
    stream_settings,
    wait_for,
    write_atomically,
)

N = 6_000
PARTITIONS = 6
CHUNKS = 30  # produced 0.2 s apart: ~6 s of traffic


def _records(start: int, count: int) -> tuple[list[RawIn], set[str]]:
    records: list[RawIn] = []
    ids: set[str] = set()
    for i in range(start, start + count):
        ingest = str(uuid.uuid4())
        ids.add(ingest)
        msh4 = b"nosuch{trustalias}" if i % 7 == 0 else b"trustalias{trustalias}"  # both output topics
        records.append(RawIn(hl7_message(msh4, b"GP%d" % i), raw_headers(ingest_id=ingest), key=b"k%d" % i))
    return records, ids


class Member:
    """One embedded processor in a thread, recording every partition it was ever assigned."""

    def __init__(self, settings: Any, registry_file: Path, name: str) -> None:
        self.processor = StreamProcessor(
            settings.model_copy(update={"transactional_id": f"{settings.transactional_id}-{name}"}),
            load_registry(registry_file),
        )
        self.error: BaseException | None = None
        self.ever_owned: set[int] = set()
        self._thread = threading.Thread(target=self._run, name=f"processor-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.processor.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def owned(self) -> set[int]:
        assert self.error is None, f"processor failed: {self.error!r}"
        now = {p for _t, p in self.processor.assignment}
        self.ever_owned |= now
        return now

    def stop(self) -> None:
        self.processor.stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "processor did not stop"
        assert self.error is None, f"processor failed: {self.error!r}"


def _group_type(settings: Any) -> ConsumerGroupType:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    futures = admin.describe_consumer_groups([settings.consumer_group], request_timeout=10)
    return futures[settings.consumer_group].result(timeout=10).type


def _require_consumer_protocol(bootstrap: str, topic: str) -> None:
    """Skip on a broker that does not serve KIP-848 groups (before Apache Kafka 4.0): a probe
    consumer in a group of its own must get partitions of ``topic``."""
    from confluent_kafka import Consumer

    errors: list[KafkaError] = []
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"kip848-probe-{uuid.uuid4().hex}",
            "group.protocol": "consumer",
            "enable.auto.commit": False,
            "error_cb": errors.append,
        }
    )

    def assigned() -> bool:
        consumer.poll(0.2)
        return bool(consumer.assignment())

    try:
        consumer.subscribe([topic])
        supported = wait_for(assigned, 20, interval=0)
    finally:
        consumer.close()
    if not supported:
        pytest.skip(f"broker does not serve group.protocol=consumer: {[e.str() for e in errors]}")


@pytest.mark.kafka
def test_two_processors_share_a_consumer_protocol_group(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pass-through path an operator uses; the processor must then leave out
    # partition.assignment.strategy (librdkafka refuses it: _INVALID_ARG).
    monkeypatch.setenv("HL7_KAFKA_GROUP_PROTOCOL", "consumer")
    registry_file = tmp_path / "registry.yaml"
    write_atomically(registry_file, registry_text())
    settings = stream_settings(
        kafka_bootstrap, unique_name, registry_file, topic_partitions=PARTITIONS,
        batch_max_records=200, batch_max_ms=50,
    )
    _require_consumer_protocol(kafka_bootstrap, settings.topic_raw)
    records, ids = _records(0, N)
    stop_producing = threading.Event()

    def produce_in_chunks() -> None:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
        size = N // CHUNKS
        for start in range(0, N, size):
            for rec in records[start:start + size]:
                producer.produce(settings.topic_raw, value=rec.value, key=rec.key, headers=rec.headers)
            assert producer.flush(30) == 0, "raw records not delivered"
            if stop_producing.wait(0.2):
                return

    a = Member(settings, registry_file, "a")
    b: Member | None = None
    producer = threading.Thread(target=produce_in_chunks, name="raw-producer", daemon=True)
    try:
        assert wait_for(lambda: len(a.owned()) == PARTITIONS, 60), f"a owns {a.owned()}"
        producer.start()
        assert wait_for(lambda: committed_total(settings) > 0, 60), "no progress before the second member"
        b = Member(settings, registry_file, "b")
        member_b = b
        # Both own partitions, together all of them, none twice.
        assert wait_for(
            lambda: member_b.owned() and a.owned() and len(a.owned()) + len(member_b.owned()) == PARTITIONS
            and not a.owned() & member_b.owned(),
            60,
        ), f"a owns {a.owned()}, b owns {member_b.owned()}"
        assert _group_type(settings) == ConsumerGroupType.CONSUMER
        assert producer.is_alive(), "all records were produced before the rebalance: raise N or CHUNKS"
        producer.join(60)
        assert wait_for(lambda: committed_total(settings) >= N, 120), f"committed {committed_total(settings)} of {N}"
        a.owned()
        member_b.owned()
    finally:
        stop_producing.set()
        a.stop()
        if b is not None:
            b.stop()

    out = read_outputs(settings, expect=N, timeout=120)
    seen = [r.header("hl7.ingest_id") for r in out]
    assert len(out) == N, f"{len(out)} outputs for {N} raw records"
    assert len(set(seen)) == N and set(seen) == ids
    accepted = sum(1 for r in out if r.topic == settings.topic_accepted)
    assert accepted == N - len(range(0, N, 7))
    assert a.ever_owned and b.ever_owned
    assert a.processor.committed_records + b.processor.committed_records >= N
    assert b.processor.committed_records > 0, "the second member never committed a batch"


# --- consumer settings under the consumer protocol (no broker) -----------------------------------


def _settings() -> Any:
    return load_settings(kafka_bootstrap_servers="127.0.0.1:1")


def test_consumer_protocol_config_has_no_classic_only_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL7_KAFKA_GROUP_PROTOCOL", "consumer")
    conf = consumer_config(_settings(), **{"enable.partition.eof": False})
    assert conf["group.protocol"] == "consumer"
    assert not {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"} & set(conf)


@pytest.mark.parametrize("name", ["SESSION_TIMEOUT_MS", "HEARTBEAT_INTERVAL_MS", "PARTITION_ASSIGNMENT_STRATEGY"])
def test_classic_only_passthrough_is_a_config_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("HL7_KAFKA_GROUP_PROTOCOL", "consumer")
    monkeypatch.setenv(f"HL7_KAFKA_{name}", "6000")
    with pytest.raises(ConfigError, match=f"HL7_KAFKA_{name}: not supported with HL7_KAFKA_GROUP_PROTOCOL=consumer"):
        consumer_config(_settings())


def test_processor_consumer_settings_per_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processor injects cooperative-sticky only for the classic protocol."""
    built: list[dict[str, Any]] = []

    class FakeConsumer:
        def __init__(self, conf: dict[str, Any]) -> None:
            built.append(conf)

        def subscribe(self, *_args: Any, **_kwargs: Any) -> None:
            pass

    def new_consumer() -> None:  # Settings (and their pass-through) are read once, when built
        session = TxnSession(_settings(), stop=threading.Event(), on_revoke=lambda *_: None,
                             consumer_factory=FakeConsumer)
        session._new_consumer()

    monkeypatch.delenv("HL7_KAFKA_GROUP_PROTOCOL", raising=False)
    new_consumer()
    monkeypatch.setenv("HL7_KAFKA_GROUP_PROTOCOL", "consumer")
    new_consumer()
    assert built[0]["partition.assignment.strategy"] == "cooperative-sticky"
    assert "group.protocol" not in built[0]
    assert "partition.assignment.strategy" not in built[1] and built[1]["group.protocol"] == "consumer"
