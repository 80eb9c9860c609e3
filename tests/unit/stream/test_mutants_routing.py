"""Routing details test_routing.py leaves open: the request charset on every path, the
Routed fields metrics read, headers carried byte for byte, and the last-resort dead letters.

Written to kill mutants that survived ``make mutation`` (docs/mutation.md).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro

from processor.avro.codec import AvroCodec
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema
from processor.raw import RawRecord, decode_headers
from processor.reasons import Reason
from processor.registry.loader import parse_registry
from processor.stream.routing import (
    OVERSIZE_DETAIL,
    UNKNOWN_PRINCIPAL,
    UNREADABLE_HEADERS_DETAIL,
    Topics,
    oversize_dead_letter,
    route,
    unreadable_headers_dead_letter,
    unroutable_dead_letter,
)

PASSWORD_HASH = (
    "$argon2id$v=19$m=8,t=1,p=1$SnMS2d9rx+FyL0jKo7ZPBg$kKWwPqyZB/qNQZR/L0B6wiDyujNe7apV6zzDB30QOFs"
)
REGISTRY = parse_registry(
    f"""
customers:
  - {{id: trust-1, alias: trustalias}}
partners:
  - {{id: mailco, username: partner_mailco, password_hash: "{PASSWORD_HASH}", authorised_by: [trust-1]}}
""".encode()
)
TOPICS = Topics(accepted="out.accepted", deadletter="out.deadletter")
CODEC = AvroCodec(
    {TOPICS.accepted: load_schema(ACCEPTED_MESSAGE), TOPICS.deadletter: load_schema(DEAD_LETTER)}
)
NOW_US = 1_767_225_600_000_000
RECEIVED_US = 1_767_225_599_000_000
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # NOW_US as Avro timestamp-micros decodes
RECEIVED = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
KEY = b"mailco|trustalias{trustalias}"

# MSH-3 "CAFÉ" in ISO 8859-1 and no MSH-18: readable only with hl7.charset = 8859/1.
LATIN1 = (
    b"MSH|^~\\&|CAF\xc9|trustalias{trustalias}|PKB|PKB|20240115103000||ADT^A01^ADT_A01|CTRL0001|P|2.4\r"
    b"PID|1||ZZT0000001||ZZ\xc9\r"
)
ASCII = LATIN1.replace(b"\xc9", b"E")


def headers(**override: bytes | None) -> list[tuple[str, bytes | None]]:
    base: dict[str, bytes | None] = {
        "hl7.ingest_id": b"0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11",
        "hl7.principal_id": b"mailco",
        "hl7.principal_type": b"partner",
        "hl7.received_at": str(RECEIVED_US).encode(),
        "hl7.source_ip": b"203.0.113.7",
        "hl7.transport": b"http",
    }
    for name, value in override.items():
        if value is None:
            base.pop("hl7." + name, None)
        else:
            base["hl7." + name] = value
    return list(base.items())


def raw(payload: bytes, kafka: list[tuple[str, bytes | None]]) -> RawRecord:
    return RawRecord("in.raw", 4, 1234, KEY, payload, decode_headers(kafka))


def decode(value: bytes, schema_file: str) -> dict[str, Any]:
    assert value[:2] == b"\xc3\x01"
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / schema_file).read_text()))
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)  # type: ignore[return-value]


def test_request_charset_applies_to_the_decision() -> None:
    kafka = headers(charset=b"8859/1")
    out = route(
        raw(LATIN1, kafka), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode, kafka_headers=kafka
    )
    assert out.outcome == "accepted" and out.reason is None and out.detail == ""
    assert out.received_at_us == RECEIVED_US and out.principal == "mailco"
    record = decode(out.value, "accepted_message.avsc")
    assert record["sending_application"] == "CAF\u00c9" and record["received_at"] == RECEIVED


def test_missing_metadata_dead_letter_reads_msh_with_the_request_charset() -> None:
    kafka = headers(transport=None, charset=b"8859/1")
    out = route(
        raw(LATIN1, kafka), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode, kafka_headers=kafka
    )
    assert out.outcome == "deadletter" and out.reason is Reason.MISSING_METADATA
    assert out.received_at_us == RECEIVED_US and out.principal == "mailco"
    record = decode(out.value, "dead_letter.avsc")
    assert record["message_control_id"] == "CTRL0001"
    assert record["sending_facility"] == "trustalias{trustalias}"


def test_headers_are_rebuilt_from_the_record_when_not_given() -> None:
    kafka = headers(principal_id="m\u00e4ilco".encode())
    out = route(raw(ASCII, kafka), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode)
    assert out.headers == kafka


def test_accepted_record_that_fails_to_encode_names_the_error() -> None:
    def encode(topic: str, record: dict[str, Any]) -> bytes:
        if topic == TOPICS.accepted:
            raise ValueError("simulated")
        return CODEC.encode(topic, record)

    kafka = headers()
    out = route(raw(ASCII, kafka), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=encode, kafka_headers=kafka)
    assert out.reason is Reason.PROCESSING_ERROR
    assert out.detail == "accepted record failed to encode (ValueError)"


def test_dead_letter_that_fails_to_encode_keeps_200_chars_of_the_detail() -> None:
    calls: list[dict[str, Any]] = []

    def encode(topic: str, record: dict[str, Any]) -> bytes:
        calls.append(record)
        if len(calls) == 1:
            raise TypeError("simulated")
        return CODEC.encode(topic, record)

    # Every required header but the principal is malformed: a row-1 detail over 200 characters.
    kafka = headers(ingest_id=b"x", received_at=b"x", source_ip=b"x", principal_type=b"x", transport=b"x")
    out = route(raw(ASCII, kafka), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=encode, kafka_headers=kafka)
    first = calls[0]["detail"]
    assert len(first) > 200
    assert out.reason is Reason.PROCESSING_ERROR
    assert (
        out.detail == f"dead letter for {first[:200]} failed to encode (TypeError); provenance fields dropped"
    )
    assert out.principal == "mailco" and out.key == KEY


def test_oversize_dead_letter_keeps_key_and_only_the_required_headers_byte_for_byte() -> None:
    kafka = headers(transport=b"http\xff", charset=b"8859/1") + [("x-trace", b"t")]
    record = raw(ASCII, kafka)
    out = oversize_dead_letter(
        record, REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode, kafka_headers=kafka
    )
    assert out.reason is Reason.PROCESSING_ERROR and out.detail == OVERSIZE_DETAIL
    assert out.key == KEY
    required = [(n, v) for n, v in kafka if n not in ("hl7.charset", "x-trace")]
    assert out.headers == required  # as read: the invalid UTF-8 byte is not replaced
    letter = decode(out.value, "dead_letter.avsc")
    assert letter["payload"] == b""
    assert letter["principal_id"] == "mailco"
    assert set(letter["headers"]) == {n for n, _ in required}
    rebuilt = oversize_dead_letter(record, REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode)
    assert [n for n, _ in rebuilt.headers] == [n for n, _ in required]


def test_unreadable_headers_dead_letter() -> None:
    record = RawRecord("in.raw", 4, 1234, KEY, ASCII, {})
    out = unreadable_headers_dead_letter(record, REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode)
    assert (out.outcome, out.topic, out.key, out.headers) == ("deadletter", TOPICS.deadletter, KEY, [])
    assert out.reason is Reason.MISSING_METADATA and out.detail == UNREADABLE_HEADERS_DETAIL
    assert out.principal == UNKNOWN_PRINCIPAL and out.received_at_us is None
    letter = decode(out.value, "dead_letter.avsc")
    assert letter["reason"] == "MISSING_METADATA" and letter["detail"] == UNREADABLE_HEADERS_DETAIL
    assert letter["payload"] == ASCII and letter["headers"] == {}
    assert letter["dead_lettered_at"] == NOW and letter["registry_version"] == REGISTRY.version
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "in.raw",
        4,
        1234,
    )
    assert letter["message_control_id"] == "CTRL0001" and letter["trigger_event"] == "A01"


def test_unroutable_dead_letter() -> None:
    kafka = headers()
    record = raw(ASCII, kafka)
    out = unroutable_dead_letter(
        record, REGISTRY, error=KeyError("boom"), now_us=NOW_US, topics=TOPICS, encode=CODEC.encode
    )
    detail = "routing failed (KeyError); headers not carried over"
    assert (out.outcome, out.topic, out.key, out.headers) == ("deadletter", TOPICS.deadletter, KEY, [])
    assert out.reason is Reason.PROCESSING_ERROR and out.detail == detail
    assert out.principal == UNKNOWN_PRINCIPAL and out.received_at_us is None
    letter = decode(out.value, "dead_letter.avsc")
    assert letter["reason"] == "PROCESSING_ERROR" and letter["detail"] == detail
    assert letter["payload"] == ASCII and letter["headers"] == {} and letter["principal_id"] is None
    assert letter["dead_lettered_at"] == NOW and letter["registry_version"] == REGISTRY.version
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "in.raw",
        4,
        1234,
    )
    assert letter["message_control_id"] is None


def test_missing_headers_are_listed_in_one_detail() -> None:
    kafka = headers(transport=None, source_ip=None)
    out = route(
        raw(ASCII, kafka), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode, kafka_headers=kafka
    )
    assert out.reason is Reason.MISSING_METADATA
    assert out.detail == "missing header(s): hl7.source_ip, hl7.transport"
