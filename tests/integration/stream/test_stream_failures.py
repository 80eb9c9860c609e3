"""Broker-side failures against a real broker: abort + rewind, ambiguous commit, fencing.

* abortable: the output topic refuses a record as too large (``RECORD_TOO_LARGE``);
  the transaction is aborted, the consumer rewinds, and on the retry that record
  becomes a small ``PROCESSING_ERROR`` dead letter: its partition is not stuck.
* ambiguous: ``commit_transaction`` reports a timeout although the commit did
  (or did not) happen; the processor must replace its producer (fencing the old
  one) and rewind, producing no duplicate and losing nothing.
* fenced: a second instance with the same ``transactional.id`` fences the first,
  whose ``run()`` raises ``StreamFatalError``; the second finishes the work.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processor.avro.codec import AvroCodec
from processor.config import Settings
from processor.kafka.topics import dedupe_spec, topic_configs
from processor.registry.loader import parse_registry
from processor.stream import StreamFatalError, StreamProcessor
from tests.builders import hl7_message, registry_text
from tests.integration.sentinel import outputs_through_sentinel, partition_count
from tests.integration.stream.stream_kit import (
    RawIn,
    produce_raw,
    raw_headers,
    read_outputs,
    stream_settings,
    wait_for,
)

pytestmark = pytest.mark.kafka

REGISTRY = parse_registry(registry_text().encode())


class Runner:
    """A StreamProcessor on a thread, remembering how run() ended."""

    def __init__(self, proc: StreamProcessor) -> None:
        self.proc = proc
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.proc.run()
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def stop(self) -> None:
        self.proc.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _ids(out) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.header("hl7.ingest_id") for r in out]


def test_record_too_large_for_output_topic_aborts_then_dead_letters(
    kafka_bootstrap: str, unique_name
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_raw=unique_name("raw"), topic_accepted=unique_name("accepted"),
        topic_deadletter=unique_name("deadletter"), consumer_group=unique_name("group"),
        transactional_id=unique_name("txn"), batch_max_records=20, batch_max_ms=50,
    )
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    small = dict(topic_configs(settings), **{"max.message.bytes": "20000"})
    futures = admin.create_topics([
        NewTopic(settings.topic_raw, 2, -1, config=topic_configs(settings)),
        NewTopic(settings.topic_accepted, 2, -1, config=small),
        NewTopic(settings.topic_deadletter, 2, -1, config=small),
        dedupe_spec(settings, partitions=2).new_topic(),
    ])
    for f in futures.values():
        f.result(30)
    # Incompressible padding: the broker's limit applies to the compressed batch.
    big = hl7_message(control_id=b"BIG") + b"OBX|1|ED|DOC||" + base64.b64encode(os.urandom(60_000)) + b"\r"
    records = [RawIn(hl7_message(control_id=b"N%d" % i), raw_headers()) for i in range(60)]
    records.insert(30, RawIn(big, raw_headers()))
    produce_raw(settings, records)

    from prometheus_client import REGISTRY as METRICS

    def transactions(result: str) -> float:
        return METRICS.get_sample_value("hl7_processor_transactions_total", {"result": result}) or 0.0

    aborted_before, committed_before = transactions("aborted"), transactions("committed")
    runner = Runner(StreamProcessor(settings, REGISTRY))
    try:
        out = outputs_through_sentinel(settings, timeout=120)  # everything routed, nothing extra
    finally:
        runner.stop()
    assert runner.error is None
    # The broker's refusal aborted at least one transaction (the big record's, and on the
    # retry alone possibly its own again), and each abort was counted: SPEC 6
    # hl7_processor_transactions_total{result="aborted"}. The retries then committed.
    assert transactions("aborted") - aborted_before >= 1
    assert transactions("committed") - committed_before >= 1
    assert len(out) == len(records) and len(set(_ids(out))) == len(records)
    big_id = dict(records[30].headers)["hl7.ingest_id"].decode()
    got = next(r for r in out if r.header("hl7.ingest_id") == big_id)
    assert got.topic == settings.topic_deadletter
    rec = AvroCodec.from_settings(settings).decode(got.value)
    assert rec["reason"] == "PROCESSING_ERROR" and rec["detail"].startswith("oversize")
    assert rec["payload"] == b""  # the original stays in the raw topic at source_offset
    # Only the big record: its neighbours, refused by the broker in the same produce
    # request, are accepted with their payload once re-sent without it.
    others = [r for r in out if r.header("hl7.ingest_id") != big_id]
    assert {r.topic for r in others} == {settings.topic_accepted}


def test_output_over_the_producer_limit_is_counted_as_the_dead_letter_written(
    kafka_bootstrap: str, unique_name
) -> None:
    """A record over the producer's own message.max.bytes fails at produce() (no abort):
    the slim PROCESSING_ERROR dead letter is what is written, and what is counted."""
    from prometheus_client import REGISTRY as METRICS

    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap, max_body_bytes=10_000,  # producer limit ~1.06 MB
        topic_raw=unique_name("raw"), topic_accepted=unique_name("accepted"),
        topic_deadletter=unique_name("deadletter"), consumer_group=unique_name("group"),
        transactional_id=unique_name("txn"), batch_max_records=20, batch_max_ms=50,
    )
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    roomy = dict(topic_configs(settings), **{"max.message.bytes": str(4 * 1024 * 1024)})
    for f in admin.create_topics([*(NewTopic(t, 1, -1, config=roomy) for t in (
        settings.topic_raw, settings.topic_accepted, settings.topic_deadletter)),
                                  dedupe_spec(settings, partitions=1).new_topic()]).values():
        f.result(30)
    big = hl7_message(control_id=b"HUGE") + b"OBX|1|ED|DOC||" + base64.b64encode(os.urandom(1_200_000)) + b"\r"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 4 * 1024 * 1024})
    producer.produce(settings.topic_raw, value=big, headers=raw_headers())
    assert producer.flush(30) == 0

    labels = {"outcome": "deadletter", "reason": "PROCESSING_ERROR", "principal": "mailco"}
    accepted = {"outcome": "accepted", "reason": "", "principal": "mailco"}
    before = METRICS.get_sample_value("hl7_processor_records_total", labels) or 0.0
    accepted_before = METRICS.get_sample_value("hl7_processor_records_total", accepted) or 0.0
    runner = Runner(StreamProcessor(settings, REGISTRY))
    try:
        [out] = read_outputs(settings, expect=1, timeout=90)
        assert wait_for(lambda: runner.proc.committed_records == 1, 30)
    finally:
        runner.stop()
    assert out.topic == settings.topic_deadletter
    rec = AvroCodec.from_settings(settings).decode(out.value)
    assert rec["reason"] == "PROCESSING_ERROR" and rec["payload"] == b""
    assert METRICS.get_sample_value("hl7_processor_records_total", labels) == before + 1
    assert (METRICS.get_sample_value("hl7_processor_records_total", accepted) or 0.0) == accepted_before


class _Trip:
    """Makes one commit_transaction report a timeout (before or after really committing)."""

    def __init__(self, after_commit: bool, on_commit_number: int = 3) -> None:
        self.after_commit = after_commit
        self.target = on_commit_number
        self.commits = 0
        self.tripped = False

    def factory(self) -> Callable[[dict], Producer]:
        trip = self

        class FlakyProducer(Producer):
            def commit_transaction(self, *args):  # type: ignore[no-untyped-def]
                trip.commits += 1
                fire = not trip.tripped and trip.commits == trip.target
                if fire and not trip.after_commit:
                    trip.tripped = True
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "simulated", retriable=True))
                super().commit_transaction(*args)
                if fire:
                    trip.tripped = True
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "simulated", retriable=True))

        return FlakyProducer


@pytest.mark.parametrize("after_commit", [False, True], ids=["timeout-not-committed", "timeout-but-committed"])
def test_ambiguous_commit_replaces_producer_without_duplicates(
    kafka_bootstrap: str, unique_name, after_commit: bool
) -> None:
    settings = stream_settings(kafka_bootstrap, unique_name, batch_max_records=25, batch_max_ms=20)
    n = 500
    produce_raw(settings, [RawIn(hl7_message(control_id=b"A%d" % i), raw_headers()) for i in range(n)])
    trip = _Trip(after_commit)
    runner = Runner(StreamProcessor(settings, REGISTRY, producer_factory=trip.factory()))
    try:
        out = outputs_through_sentinel(settings, timeout=120)  # everything routed, nothing extra
    finally:
        runner.stop()
    assert runner.error is None
    assert trip.tripped
    assert runner.proc.producers_created == 2  # replaced once, same transactional.id
    ids = _ids(out)
    assert len(ids) == n and len(set(ids)) == n
    # Counted once whichever way the commit went: a batch that did land is not dropped
    # from the counters, one that did not is counted when its retry commits.
    assert runner.proc.committed_records == n + partition_count(kafka_bootstrap, settings.topic_raw)  # + sentinels


def test_second_instance_with_same_transactional_id_fences_the_first(
    kafka_bootstrap: str, unique_name
) -> None:
    settings = stream_settings(kafka_bootstrap, unique_name, batch_max_records=10, batch_max_ms=10)
    n = 3_000
    produce_raw(settings, [RawIn(hl7_message(control_id=b"F%d" % i), raw_headers()) for i in range(n)])
    first = Runner(StreamProcessor(settings, REGISTRY))
    assert wait_for(lambda: first.proc.committed_records > 0, 60)
    second = Runner(StreamProcessor(settings, REGISTRY))  # same transactional.id
    try:
        first.thread.join(90)
        assert isinstance(first.error, StreamFatalError)
        assert not first.proc.live()
        out = outputs_through_sentinel(settings, timeout=180)  # everything routed, nothing extra
    finally:
        second.stop()
    assert second.error is None
    ids = _ids(out)
    assert len(ids) == n and len(set(ids)) == n
