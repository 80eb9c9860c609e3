"""Least privilege, enforced by Kafka itself: a SASL/SCRAM broker with the StandardAuthorizer.

One broker for the module (``LocalKafka`` in SASL mode, own data directory, any port).
The super user ``admin`` applies the role ACLs through ``hl7-processor acls --apply``;
``hl7-admin`` then creates the topics with ``hl7-processor topics create``. Each role's
SCRAM credentials are then used by real confluent-kafka clients: what a role may do
works, and what it may not is refused by the broker (positive Kafka error codes, e.g.
TOPIC_AUTHORIZATION_FAILED; librdkafka's own errors are negative). Finally the real
edge publisher, stream processor and dead-letter replay run under their own principals
without a single request refused, so the ACLs are also enough.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from processor.cli import main
from processor.config import Settings
from processor.kafka.acls import role_acls
from processor.kafka.local_broker import LocalKafka

pytestmark = pytest.mark.kafka

USERS = {
    "hl7-edge": "edge-pw-1", "hl7-processor": "processor-pw-1",
    "hl7-replay": "replay-pw-1", "hl7-admin": "admin-pw-1",
}
_SETTINGS_ENV = (
    "HL7_KAFKA_BOOTSTRAP_SERVERS", "HL7_TOPIC_RAW", "HL7_TOPIC_ACCEPTED", "HL7_TOPIC_DEADLETTER",
    "HL7_CONSUMER_GROUP", "HL7_TRANSACTIONAL_ID", "HL7_SCHEMA_REGISTRY_URL", "HL7_TOPIC_PARTITIONS",
)
AUTH_FAILED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


def _as(mp: pytest.MonkeyPatch, broker: LocalKafka, user: str, **settings: str) -> None:
    """Point the ``HL7_*`` environment (what the commands and the gateway's clients read)
    at ``broker`` as ``user``."""
    conf = broker.client_config(user)
    for name in _SETTINGS_ENV:
        mp.delenv(name, raising=False)
    mp.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    mp.setenv("HL7_KAFKA_SECURITY_PROTOCOL", conf["security.protocol"])
    mp.setenv("HL7_KAFKA_SASL_MECHANISM", conf["sasl.mechanism"])
    mp.setenv("HL7_KAFKA_SASL_USERNAME", conf["sasl.username"])
    mp.setenv("HL7_KAFKA_SASL_PASSWORD", conf["sasl.password"])
    for key, value in settings.items():
        mp.setenv(f"HL7_{key.upper()}", value)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka(data_dir=tmp_path_factory.mktemp("sasl-kafka"), port=0, sasl_users=USERS)
    kafka.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(tmp_path_factory.mktemp("cwd"))  # no .env file
            _as(mp, kafka, "admin")
            assert main(["acls", "--apply"]) == 0
            _as(mp, kafka, "hl7-admin")  # the admin role's ACLs are enough to create the topics
            assert main(["topics", "create", "--partitions", "1"]) == 0
        yield kafka
    finally:
        kafka.close()


def _client(broker: LocalKafka, user: str, **extra: Any) -> dict[str, Any]:
    return {**broker.client_config(user), "log_level": 2, **extra}


def _produce(broker: LocalKafka, user: str, topic: str, value: bytes, **extra: Any) -> KafkaError | None:
    """One record from an idempotent ``acks=all`` producer; the delivery error, if any."""
    producer = Producer(_client(broker, user, **{"enable.idempotence": True, "acks": "all",
                                                 "message.timeout.ms": 15000, **extra}))
    outcome: list[KafkaError | None] = []
    producer.produce(topic, value=value, on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(30)
    assert outcome, "no delivery report"
    return outcome[0]


def _first_error(consumer: Consumer, timeout: float = 20.0) -> KafkaError | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is not None:
            return msg.error()
        if msg is not None:
            raise AssertionError(f"read a record from {msg.topic()}")
    return None


def test_admin_reapplies_the_acls_idempotently(
    broker: LocalKafka, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _as(monkeypatch, broker, "hl7-admin")
    assert main(["acls", "--apply"]) == 0
    out = capsys.readouterr().out
    expected = len(role_acls(Settings(_env_file=None)))  # type: ignore[call-arg]
    assert expected >= 40  # edge, processor (with the dedupe changelog), replay, admin
    assert f"0 ACL(s) created, {expected} already present" in out
    assert re.search(r"^exists +edge +User:hl7-edge +TOPIC:hl7.raw +WRITE$", out, re.M)


def test_a_role_without_alter_on_the_cluster_cannot_apply_acls(
    broker: LocalKafka, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _as(monkeypatch, broker, "hl7-processor")
    assert main(["acls", "--apply", "--edge-principal", "User:intruder"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CLUSTER_AUTHORIZATION_FAILED" in err[0]


def test_edge_produces_to_raw_only(broker: LocalKafka) -> None:
    # Idempotent, acks=all, and no IDEMPOTENT_WRITE on the cluster: WRITE on the topic suffices.
    assert _produce(broker, "hl7-edge", "hl7.raw", b"edge-ok") is None
    for topic in ("hl7.accepted", "hl7.deadletter"):
        error = _produce(broker, "hl7-edge", topic, b"edge-forbidden")
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


@pytest.mark.parametrize("topic, group", [
    ("hl7.raw", "hl7-processor"), ("hl7.accepted", "edge-snoop"), ("hl7.deadletter", "edge-snoop"),
    ("hl7.deadletter.replayed", "hl7-reader-snoop"),
])
def test_edge_cannot_consume(broker: LocalKafka, topic: str, group: str) -> None:
    consumer = Consumer(_client(broker, "hl7-edge", **{"group.id": group, "auto.offset.reset": "earliest"}))
    try:
        consumer.subscribe([topic])
        error = _first_error(consumer)
    finally:
        consumer.close()
    assert error is not None and error.code() in AUTH_FAILED, error
    assert error.code() > 0  # a broker error code, not a local librdkafka one


def test_processor_consumes_raw_in_its_group_and_commits_a_transaction(broker: LocalKafka) -> None:
    marker = uuid.uuid4().hex.encode()
    assert _produce(broker, "hl7-edge", "hl7.raw", marker) is None
    consumer = Consumer(_client(broker, "hl7-processor", **{
        "group.id": "hl7-processor", "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }))
    producer = Producer(_client(broker, "hl7-processor", **{"transactional.id": "hl7-processor-acl-test"}))
    try:
        consumer.subscribe(["hl7.raw"])
        deadline = time.monotonic() + 30
        seen = None
        while seen is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            if msg.value() == marker:
                seen = msg
        assert seen is not None, "the processor did not read hl7.raw"
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce("hl7.accepted", value=b"accepted:" + marker)
        producer.produce("hl7.deadletter", value=b"dead:" + marker)
        producer.send_offsets_to_transaction(
            [TopicPartition("hl7.raw", seen.partition(), seen.offset() + 1)],
            consumer.consumer_group_metadata(), 30,
        )
        producer.commit_transaction(30)
        committed = consumer.committed([TopicPartition("hl7.raw", seen.partition())], timeout=30)
        assert committed[0].offset == seen.offset() + 1
    finally:
        consumer.close()

    reader = Consumer(_client(broker, "admin", **{"group.id": "verify", "isolation.level": "read_committed",
                                                   "enable.partition.eof": True}))
    try:
        reader.assign([TopicPartition("hl7.accepted", 0, 0)])
        values = []
        while True:
            msg = reader.poll(10)
            assert msg is not None, "hl7.accepted not read to its end"
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF
                break
            values.append(msg.value())
    finally:
        reader.close()
    assert b"accepted:" + marker in values


def test_processor_cannot_produce_to_raw(broker: LocalKafka) -> None:
    error = _produce(broker, "hl7-processor", "hl7.raw", b"processor-forbidden")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


def test_processor_cannot_use_another_transactional_id(broker: LocalKafka) -> None:
    producer = Producer(_client(broker, "hl7-processor", **{"transactional.id": "someone-else"}))
    with pytest.raises(Exception) as caught:
        producer.init_transactions(20)
    error = caught.value.args[0]
    assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, error


def test_the_gateway_itself_runs_on_these_acls_with_renamed_topics(
    broker: LocalKafka, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Edge publisher, stream processor and dead-letter replay, each as its own principal,
    on topics and a group renamed by settings: everything works and nothing is refused."""
    from processor.deadletter_replay import DeadLetterReplayer, ReplayCriteria
    from processor.edge.publisher import KafkaPublisher
    from processor.registry.loader import parse_registry
    from processor.stream import StreamProcessor
    from tests.builders import hl7_message, registry_text
    from tests.integration.stream.stream_kit import raw_headers

    monkeypatch.chdir(tmp_path)
    names = {"topic_raw": "partner.raw", "topic_accepted": "partner.accepted",
             "topic_deadletter": "partner.deadletter", "consumer_group": "partner-processor",
             "transactional_id": "partner-processor-0"}
    _as(monkeypatch, broker, "admin", **names)
    assert main(["acls", "--apply", "--transactional-id-prefix", "partner-processor-"]) == 0
    _as(monkeypatch, broker, "hl7-admin", **names)
    assert main(["topics", "create", "--partitions", "1"]) == 0
    refused_before = len(broker.denials())

    def settings() -> Settings:
        return Settings(_env_file=None, batch_max_ms=50)  # type: ignore[call-arg]

    # edge: one record the registry accepts, one it refuses (partner not authorised by trust-2)
    _as(monkeypatch, broker, "hl7-edge", **names)
    publisher = KafkaPublisher(settings())
    publisher.start()

    async def publish() -> None:
        await publisher.publish("partner.raw", b"k1", hl7_message(control_id=b"OK1"), raw_headers())
        await publisher.publish("partner.raw", b"k2", hl7_message(b"otheralias{otheralias}"), raw_headers())

    try:
        asyncio.run(publish())
    finally:
        assert publisher.close() == 0

    # processor: reads them in its group, commits one accepted + one dead letter
    def process(expected: int, registry: str) -> None:
        _as(monkeypatch, broker, "hl7-processor", **names)
        processor = StreamProcessor(settings(), lambda: parse_registry(registry.encode()), lag_interval_s=0.5)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                processor.run()
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 40
        while processor.committed_records < expected and time.monotonic() < deadline and not errors:
            time.sleep(0.2)
        processor.stop()
        thread.join(30)
        assert not errors, errors
        assert processor.committed_records == expected

    process(2, registry_text())

    # replay: the grant is fixed now; the dead letter goes back to partner.raw, once
    _as(monkeypatch, broker, "hl7-replay", **names)
    fixed = parse_registry(registry_text(extra_grants=", trust-2").encode())
    replayer = DeadLetterReplayer(settings())
    scan = replayer.scan(ReplayCriteria(), fixed)
    assert [c.reason for c in scan.chosen] == ["PARTNER_NOT_AUTHORISED"]
    assert replayer.publish(scan.chosen) == 1
    assert replayer.scan(ReplayCriteria(), fixed).already_replayed == 1

    # a resend of the accepted message (a DUPLICATE) and the replayed record (accepted now):
    # the processor restores its dedupe state from the changelog first, on the same ACLs
    _as(monkeypatch, broker, "hl7-edge", **names)
    publisher = KafkaPublisher(settings())
    publisher.start()
    try:
        asyncio.run(publisher.publish("partner.raw", b"k1", hl7_message(control_id=b"OK1"), raw_headers()))
    finally:
        assert publisher.close() == 0
    from prometheus_client import REGISTRY as METRICS

    duplicate = {"outcome": "deadletter", "reason": "DUPLICATE", "principal": "mailco"}
    before = METRICS.get_sample_value("hl7_processor_records_total", duplicate) or 0.0
    process(2, registry_text(extra_grants=", trust-2"))
    assert (METRICS.get_sample_value("hl7_processor_records_total", duplicate) or 0.0) - before == 1

    refused = broker.denials()[refused_before:]
    assert refused == [], "\n".join(refused)


def test_edge_cannot_fetch_raw_even_without_a_group(broker: LocalKafka) -> None:
    """Assigned partitions, explicit offset: no group needed, so the topic itself refuses
    (the edge may DESCRIBE and WRITE hl7.raw, never READ it)."""
    consumer = Consumer(_client(broker, "hl7-edge", **{"group.id": "edge-snoop"}))
    codes = set()
    try:
        consumer.assign([TopicPartition("hl7.raw", 0, 0)])
        deadline = time.monotonic() + 20
        while KafkaError.TOPIC_AUTHORIZATION_FAILED not in codes and time.monotonic() < deadline:
            error = _first_error(consumer, timeout=1.0)
            if error is not None:
                codes.add(error.code())
    finally:
        consumer.close()
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, codes


@pytest.mark.slow  # a second broker (~11 s): the rest of the module stays under 30 s
def test_kafka_command_sasl_mode_prints_users_and_enforces_acls(tmp_path: Path) -> None:
    """``hl7-processor kafka --sasl``: a user per role; without ACLs only the super user may act."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "kafka", "--sasl", "--port", "0",
         "--data-dir", str(tmp_path / "kafka")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("data: "):
                break
        text = "\n".join(lines)
        bootstrap = re.search(r"^bootstrap: (\S+)$", text, re.M)
        assert bootstrap, text
        users = dict(re.findall(r"^  (\S+) +(\S+)", text, re.M))
        assert set(users) == {"admin", "hl7-edge", "hl7-processor", "hl7-replay", "hl7-admin"}, text
        assert "SCRAM-SHA-512" in text and "StandardAuthorizer" in text

        def produce(user: str) -> KafkaError | None:
            producer = Producer({"bootstrap.servers": bootstrap.group(1), "security.protocol": "SASL_PLAINTEXT",
                                 "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                                 "sasl.password": users[user], "message.timeout.ms": 15000, "log_level": 2})
            outcome: list[KafkaError | None] = []
            producer.produce("cli-sasl", value=b"x", on_delivery=lambda err, _m: outcome.append(err))
            producer.flush(30)
            return outcome[0] if outcome else KafkaError(KafkaError._TIMED_OUT)

        assert produce("admin") is None  # super user: auto-creates the topic
        error = produce("hl7-edge")
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
