"""The processor against a real broker: every reason code, provenance, byte-identical payloads.

Raw records are produced the way the edge (or an upstream gateway) would, plus
malformed ones; the processor runs embedded in a thread; a ``read_committed``
consumer reads both output topics; values are decoded by an independent Avro
decoder (fastavro + the ``.avsc`` files, skipping the single-object header).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from processor.avro.codec import AvroCodec
from processor.metrics import PROCESSOR_RECORDS, PROCESSOR_TRANSACTIONS
from processor.registry.loader import parse_registry
from processor.registry.watcher import RegistryWatcher
from processor.stream import StreamProcessor
from tests import contract
from tests.builders import hl7_message, registry_text
from tests.integration.sentinel import outputs_through_sentinel, partition_count
from tests.integration.stream.stream_kit import (
    RawIn,
    produce_raw,
    raw_headers,
    read_outputs,
    stream_settings,
    wait_for,
    write_atomically,
)
from tests.integration.stream.wire_produce import produce_with_raw_header_names

pytestmark = pytest.mark.kafka

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
BOOM = b"BOOM-ENCODE"


def independent_decode(value: bytes, schema_file: str) -> dict:
    assert value[:2] == b"\xc3\x01", "single-object marker"
    schema = fastavro.parse_schema(json.loads((SCHEMAS / schema_file).read_text()))
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)


def raw_coordinates(settings) -> set[tuple[int, int]]:
    """(partition, offset) of every record in the raw topic."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "coords",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    parts = consumer.list_topics(settings.topic_raw, timeout=10).topics[settings.topic_raw].partitions
    consumer.assign([TopicPartition(settings.topic_raw, p, 0) for p in parts])
    found: set[tuple[int, int]] = set()
    eof: set[int] = set()
    deadline = time.monotonic() + 30
    while len(eof) < len(parts) and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is None:
                found.add((msg.partition(), msg.offset()))
            else:
                eof.add(msg.partition())
    consumer.close()
    return found


def cases() -> list[tuple[str | None, RawIn]]:
    """(expected reason or None for accepted, raw record)."""
    def rec(msh4: bytes = b"trustalias{trustalias}", principal: str = "mailco", ptype: str = "partner",
            control: bytes = b"C1", headers=None, value: bytes | None = None) -> RawIn:
        h = raw_headers(principal, ptype) if headers is None else headers
        v = hl7_message(msh4, control) if value is None else value
        return RawIn(v, h, key=f"{principal}|".encode() + msh4)

    no_transport = [h for h in raw_headers() if h[0] != "hl7.transport"]
    # 8859/1 bytes, no MSH-18: decodable only by the charset the edge saw on the request.
    latin1 = hl7_message(control_id=b"LATIN1").replace(b"ZZTESTFIRST", "ZZT\u00c9ST".encode("latin-1"))
    with_charset = [*raw_headers(), ("hl7.charset", b"8859/1")]
    bad_time = [(k, b"soon" if k == "hl7.received_at" else v) for k, v in raw_headers()]
    return [
        (None, rec()),
        (None, rec(b"conalias{trustalias}", control=b"DELEGATED")),
        (None, rec(principal="cust-login", ptype="customer", msh4=b"custalias", control=b"LEGACY")),
        ("MISSING_METADATA", rec(headers=no_transport)),
        ("MISSING_METADATA", rec(headers=bad_time)),
        ("MISSING_METADATA", rec(headers=[])),
        ("PRINCIPAL_UNKNOWN", rec(principal="nobody")),
        ("PRINCIPAL_NOT_ACTIVE", rec(principal="sleepy")),
        ("MALFORMED_HL7", rec(value=b"\x00\xff\x13binary junk\x00" * 10)),
        (None, rec(control=b"LATIN1", value=latin1, headers=with_charset)),
        ("MALFORMED_HL7", rec(control=b"LATIN1", value=latin1)),
        ("MALFORMED_HL7", rec(value=b"")),
        ("MSH4_MISSING", rec(b"")),
        ("MSH4_SYNTAX", rec(b"trust alias{x")),
        ("UNKNOWN_CONNECTING_ALIAS", rec(b"nosuch{trustalias}")),
        ("UNKNOWN_DATA_CONTROLLER_ALIAS", rec(b"trustalias{nosuch}")),
        ("CUSTOMER_NOT_ACTIVE", rec(b"offalias{offalias}")),
        ("PARTNER_NOT_AUTHORISED", rec(b"otheralias{otheralias}")),
        ("CUSTOMER_ALIAS_MISMATCH", rec(principal="cust-login", ptype="customer")),
        ("DELEGATION_NOT_AUTHORISED", rec(b"trustalias{otheralias}")),
        ("PROCESSING_ERROR", rec(control=BOOM)),
        ("DUPLICATE", rec()),  # row 12: the first record again (same key: same partition, after it)
    ]


@pytest.fixture
def running(kafka_bootstrap: str, unique_name, tmp_path: Path) -> Iterator[tuple]:
    """(settings, watcher, processor) with the processor running in a thread."""
    registry_file = tmp_path / "registry.yaml"
    write_atomically(registry_file, registry_text())
    settings = stream_settings(
        kafka_bootstrap, unique_name, registry_file, batch_max_ms=50, registry_reload_seconds=0.2
    )
    codec = AvroCodec.from_settings(settings)

    def encode(topic: str, record: dict) -> bytes:
        # Simulates an Avro failure for one record: it must become a dead letter.
        if topic == settings.topic_accepted and record.get("message_control_id") == BOOM.decode():
            raise ValueError("simulated encoding failure")
        return codec.encode(topic, record)

    watcher = RegistryWatcher(registry_file, 0.2, settle=False)
    watcher.start()
    proc = StreamProcessor(settings, watcher, encode=encode, lag_interval_s=0.5)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            proc.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield settings, watcher, proc
    finally:
        proc.stop()
        thread.join(60)
        watcher.stop()
        assert not thread.is_alive(), "run() did not return after stop()"
        assert not errors, errors


def test_every_reason_code_through_the_processor(running) -> None:
    settings, watcher, proc = running
    expected = cases()
    committed_before = PROCESSOR_TRANSACTIONS.labels(result="committed")._value.get()
    produce_raw(settings, [r for _, r in expected])
    out = read_outputs(settings, expect=len(expected), timeout=90)
    assert len(out) == len(expected)

    by_ingest = {r.header("hl7.ingest_id"): r for r in out}
    seen_reasons: set[str] = set()
    coords: set[tuple[int, int]] = set()
    no_id = [r for r in out if r.header("hl7.ingest_id") is None]
    assert len(no_id) == 1  # the record sent without any header
    for reason, raw in expected:
        ingest = dict(raw.headers).get("hl7.ingest_id")
        got = by_ingest[ingest.decode()] if ingest else no_id[0]
        assert got.key == raw.key
        assert got.headers == raw.headers  # carried over, byte for byte, in order
        if reason is None:
            assert got.topic == settings.topic_accepted
            rec = independent_decode(got.value, "accepted_message.avsc")
            assert rec["ingest_id"] == ingest.decode()
        else:
            assert got.topic == settings.topic_deadletter
            rec = independent_decode(got.value, "dead_letter.avsc")
            assert rec["reason"] == reason
            seen_reasons.add(reason)
        assert rec["payload"] == raw.value  # byte-identical
        assert rec["source_topic"] == settings.topic_raw
        assert rec["registry_version"] == watcher.current.version
        coords.add((rec["source_partition"], rec["source_offset"]))
    # every SPEC 3 reason code (tests/contract.py)
    assert seen_reasons == contract.reasons_of_rows(1, 12) | {contract.UNEXPECTED_ERROR_REASON}
    # One output per input: the source coordinates are distinct and cover the raw topic.
    assert len(coords) == len(expected)
    assert coords == raw_coordinates(settings)
    assert PROCESSOR_TRANSACTIONS.labels(result="committed")._value.get() > committed_before
    assert PROCESSOR_RECORDS.labels(
        outcome="deadletter", reason="PRINCIPAL_UNKNOWN", principal="unknown"
    )._value.get() >= 1
    assert proc.readiness.status()[0]
    # Lag series exist for the owned partitions and reach 0 once everything is routed.
    def lag(p: int) -> float | None:
        return REGISTRY.get_sample_value("hl7_processor_consumer_lag", {"partition": str(p)})

    assert wait_for(lambda: all(lag(p) == 0 for p in range(3)), timeout=30)


def test_revoked_grant_dead_letters_the_next_message(running) -> None:
    settings, watcher, _proc = running
    first = RawIn(hl7_message(control_id=b"BEFORE"), raw_headers(), key=b"mailco|trustalias{trustalias}")
    produce_raw(settings, [first])
    assert len(read_outputs(settings, expect=1, timeout=60)) == 1

    old_version = watcher.current.version
    write_atomically(Path(settings.registry_file), registry_text(grant_trust1=False))
    assert wait_for(lambda: watcher.current.version != old_version, timeout=30)

    second = RawIn(hl7_message(control_id=b"AFTER"), raw_headers(), key=b"mailco|trustalias{trustalias}")
    produce_raw(settings, [second])
    out = outputs_through_sentinel(settings)  # both routed, and nothing else
    assert len(out) == 2
    after = next(r for r in out if r.header("hl7.ingest_id") == dict(second.headers)["hl7.ingest_id"].decode())
    assert after.topic == settings.topic_deadletter
    rec = independent_decode(after.value, "dead_letter.avsc")
    assert rec["reason"] == "PARTNER_NOT_AUTHORISED"
    assert rec["registry_version"] == watcher.current.version != old_version
    before = next(r for r in out if r is not after)
    assert before.topic == settings.topic_accepted


def test_stop_leaves_group_and_commits(kafka_bootstrap: str, unique_name) -> None:
    """stop() mid-stream: everything read is committed exactly once; a second instance finishes."""
    settings = stream_settings(kafka_bootstrap, unique_name, batch_max_records=50, batch_max_ms=20)
    registry = parse_registry(registry_text().encode())
    n = 2_000
    produce_raw(settings, [RawIn(hl7_message(control_id=b"S%d" % i), raw_headers()) for i in range(n)])
    first = StreamProcessor(settings, registry)
    t = threading.Thread(target=first.run, daemon=True)
    t.start()
    assert wait_for(lambda: first.committed_records > 0, timeout=60)
    first.stop()
    t.join(60)
    assert not t.is_alive()
    done_by_first = first.committed_records
    second = StreamProcessor(settings, registry)
    t2 = threading.Thread(target=second.run, daemon=True)
    t2.start()
    try:
        out = outputs_through_sentinel(settings)  # everything routed, nothing extra
    finally:
        second.stop()
        t2.join(60)
    ids = [r.header("hl7.ingest_id") for r in out]
    assert len(ids) == n and len(set(ids)) == n
    sentinels = partition_count(kafka_bootstrap, settings.topic_raw)
    assert done_by_first + second.committed_records == n + sentinels


def test_header_name_that_is_not_utf8_is_dead_lettered_not_a_crash(running) -> None:
    """confluent-kafka cannot return the headers of such a record at all: it must still
    become exactly one MISSING_METADATA dead letter (payload kept), and the record after
    it on the same partition must be routed normally."""
    settings, _watcher, proc = running
    poison = [*((k.encode(), v) for k, v in raw_headers()), (b"bad\xff\xfename", b"v")]
    after = [(k.encode(), v) for k, v in raw_headers()]
    message = hl7_message(b"trustalias{trustalias}", b"AFTER-POISON")
    produce_with_raw_header_names(settings.kafka_bootstrap_servers, settings.topic_raw, 0, [
        (b"mailco|trustalias{trustalias}", hl7_message(b"trustalias{trustalias}", b"POISON"), poison),
        (b"mailco|trustalias{trustalias}", message, after),
    ])
    out = read_outputs(settings, expect=2, timeout=60)
    codec = AvroCodec.from_settings(settings)
    by_topic = {r.topic: r for r in out}
    assert len(out) == 2 and set(by_topic) == {settings.topic_accepted, settings.topic_deadletter}
    dead = codec.decode(by_topic[settings.topic_deadletter].value)
    assert dead["reason"] == "MISSING_METADATA" and "not UTF-8" in dead["detail"]
    assert dead["payload"] == hl7_message(b"trustalias{trustalias}", b"POISON") and dead["source_offset"] == 0
    assert by_topic[settings.topic_deadletter].headers == []
    accepted = codec.decode(by_topic[settings.topic_accepted].value)
    assert accepted["payload"] == message and accepted["source_offset"] == 1
    assert proc.running
