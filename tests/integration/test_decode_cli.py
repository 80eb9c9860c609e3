"""``hl7-processor decode`` against a real broker: committed Avro records become JSON lines."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processor.avro.codec import AvroCodec
from processor.avro.raw import RawRecord
from processor.avro.records import dead_letter_record
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema
from processor.cli import main as cli_main
from processor.reasons import Reason

pytestmark = pytest.mark.kafka


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)


def _dead_letter(offset: int, payload: bytes) -> dict[str, object]:
    raw = RawRecord(
        topic="hl7.raw",
        partition=1,
        offset=offset,
        key=b"mailco|trustalias{trustalias}",
        value=payload,
        headers={"hl7.principal_id": "mailco", "hl7.received_at": "1795776224123456", "hl7.transport": "http"},
    )
    return dead_letter_record(
        reason=Reason.MALFORMED_HL7,
        detail="no MSH segment",
        raw=raw,
        dead_lettered_at_us=1_795_776_225_000_001,
        registry_version="0123456789ab",
        header=None,
    )


def test_decode_prints_committed_records_as_json_lines(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = unique_name("hl7.deadletter")
    _create_topic(kafka_bootstrap, topic)
    codec = AvroCodec({topic: load_schema(DEAD_LETTER), "unused": load_schema(ACCEPTED_MESSAGE)})
    payloads = {0: b"\x00\xff not hl7 \r", 1: b"MSH?" + bytes(range(256))}

    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("tx"), "enable.idempotence": True}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for offset, payload in payloads.items():
        producer.produce(topic, key=b"mailco|trustalias{trustalias}",
                         value=codec.encode(topic, _dead_letter(offset, payload)), partition=0)
    producer.commit_transaction(30)
    # An aborted transaction must stay invisible to the read_committed decoder.
    producer.begin_transaction()
    producer.produce(topic, value=codec.encode(topic, _dead_letter(99, b"aborted")), partition=1)
    producer.abort_transaction(30)

    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    status = cli_main(["decode", topic, "--max", "3", "--timeout", "6"])
    captured = capsys.readouterr()
    assert status == 0, captured.err

    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 2
    assert [line["source_offset"] for line in lines] == [0, 1]
    for line in lines:
        assert base64.b64decode(line["payload"], validate=True) == payloads[line["source_offset"]]
        assert line["reason"] == "MALFORMED_HL7"
        assert line["detail"] == "no MSH segment"
        assert line["principal_id"] == "mailco"
        assert line["ingest_id"] is None
        assert line["received_at"] == "2026-11-27T10:43:44.123456Z"
        assert line["dead_lettered_at"] == "2026-11-27T10:43:45.000001Z"
        assert line["headers"]["hl7.transport"] == "http"
        assert line["_partition"] == 0
        assert line["_key"] == "mailco|trustalias{trustalias}"
    assert [line["_offset"] for line in lines] == [0, 1]


def test_decode_reports_undecodable_values_and_fails(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = unique_name("hl7.accepted")
    _create_topic(kafka_bootstrap, topic)
    codec = AvroCodec({topic: load_schema(DEAD_LETTER)})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, value=b"MSH|^~\\&|raw hl7, not avro", partition=0)
    producer.produce(topic, value=codec.encode(topic, _dead_letter(5, b"ok")), partition=0)
    assert producer.flush(30) == 0

    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    status = cli_main(["decode", topic, "--max", "2", "--timeout", "8"])
    captured = capsys.readouterr()
    assert status == 1
    assert "offset 0" in captured.err and "neither Avro" in captured.err
    assert "raw hl7" not in captured.err  # the value itself is never echoed
    (line,) = [json.loads(x) for x in captured.out.splitlines()]
    assert line["_offset"] == 1 and base64.b64decode(line["payload"]) == b"ok"
