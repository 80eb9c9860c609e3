"""Record builders: SPEC field values from the decision, the MSH header and the raw record."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.avro.codec import AvroCodec
from processor.avro.records import accepted_record, dead_letter_record
from processor.decision import Accepted
from processor.hl7.header import read_header
from processor.raw import RawRecord, decode_headers
from processor.reasons import REASON_CODES, Reason
from tests.corpus import PATIENT_MARKERS, load, seed_message

HEADERS = {
    "hl7.ingest_id": "5b0b7e3c-3d8e-4a55-9a0e-6a1b2c3d4e5f",
    "hl7.principal_id": "mailco",
    "hl7.principal_type": "partner",
    "hl7.received_at": "1795776224123456",
    "hl7.source_ip": "203.0.113.7",
    "hl7.transport": "soap",
}


def _raw(value: bytes, headers: dict[str, str] | None = None) -> RawRecord:
    return RawRecord(
        topic="hl7.raw",
        partition=4,
        offset=99,
        key=b"mailco|trustalias{trustalias}",
        value=value,
        headers=dict(HEADERS if headers is None else headers),
    )


def _accepted(payload: bytes) -> Accepted:
    return Accepted(
        header=read_header(payload),
        connecting_customer_id="trust-1",
        connecting_alias="trustalias",
        data_controller_id="trust-1",
        data_controller_alias="trustalias",
        registry_version="0123456789ab",
    )


def test_accepted_record_from_seed_message(codec: AvroCodec) -> None:
    payload = seed_message()
    record = accepted_record(_accepted(payload), _raw(payload), 1_795_776_224_200_000)
    assert record == {
        "ingest_id": "5b0b7e3c-3d8e-4a55-9a0e-6a1b2c3d4e5f",
        "received_at": 1_795_776_224_123_456,
        "processed_at": 1_795_776_224_200_000,
        "principal_id": "mailco",
        "principal_type": "PARTNER",
        "connecting_customer_id": "trust-1",
        "connecting_alias": "trustalias",
        "data_controller_id": "trust-1",
        "data_controller_alias": "trustalias",
        "registry_version": "0123456789ab",
        "message_type": "ADT",
        "trigger_event": "A01",
        "message_control_id": "MSG00001",
        "hl7_version": "2.4",
        "sending_application": "PAS",
        "sending_facility": "trustalias{trustalias}",
        "transport": "soap",
        "source_ip": "203.0.113.7",
        "source_topic": "hl7.raw",
        "source_partition": 4,
        "source_offset": 99,
        "payload": payload,
        "message_structure": "ADT_A01",
        "message_datetime": "20240115103000",
        "processing_id": "P",
        "character_set": None,
    }
    assert codec.decode(codec.encode("hl7.accepted", record))["payload"] == payload


def test_sending_facility_is_msh4_as_received_still_escaped() -> None:
    payload = load("adt_a03_v25_escaped_msh4")
    record = accepted_record(_accepted(payload), _raw(payload), 0)
    assert record["sending_facility"] == "trust\\T\\alias{trustalias}"


@pytest.mark.parametrize("name", ["adt_a01_v231_lf", "oru_r01_v251_enhanced", "siu_s12_v27_truncation_char",
                                  "adt_a04_v25_odd_delims", "adt_a01_v24_latin1", "mdm_t02_v26_base64_pdf"])
def test_corpus_messages_build_valid_accepted_records(codec: AvroCodec, name: str) -> None:
    payload = load(name)
    record = accepted_record(_accepted(payload), _raw(payload), 1)
    decoded = codec.decode(codec.encode("hl7.accepted", record))
    assert decoded["payload"] == payload
    assert decoded["message_control_id"] == read_header(payload).message_control_id


def test_customer_principal_type() -> None:
    payload = seed_message()
    record = accepted_record(_accepted(payload), _raw(payload, {**HEADERS, "hl7.principal_type": "customer"}), 0)
    assert record["principal_type"] == "CUSTOMER"


@pytest.mark.parametrize("missing", sorted(HEADERS))
def test_accepted_record_refuses_missing_header_naming_it(missing: str) -> None:
    payload = seed_message()
    headers = {k: v for k, v in HEADERS.items() if k != missing}
    with pytest.raises(ValueError, match=missing.replace(".", r"\.")):
        accepted_record(_accepted(payload), _raw(payload, headers), 0)


@pytest.mark.parametrize("header,value", [("hl7.received_at", "yesterday"), ("hl7.principal_type", "robot")])
def test_accepted_record_refuses_invalid_header_without_quoting_it(header: str, value: str) -> None:
    payload = seed_message()
    with pytest.raises(ValueError) as caught:
        accepted_record(_accepted(payload), _raw(payload, {**HEADERS, header: value}), 0)
    assert header in str(caught.value) and value not in str(caught.value)


def test_dead_letter_with_header_and_valid_raw_headers(codec: AvroCodec) -> None:
    payload = seed_message(msh4=b"otheralias{otheralias}", control_id=b"CTRL-7")
    raw = _raw(payload, {**HEADERS, "x-extra": "kept"})
    record = dead_letter_record(
        reason=Reason.UNKNOWN_CONNECTING_ALIAS,
        detail="no customer has alias otheralias",
        raw=raw,
        dead_lettered_at_us=1_795_776_224_300_000,
        registry_version="0123456789ab",
        header=read_header(payload),
    )
    assert record == {
        "ingest_id": HEADERS["hl7.ingest_id"],
        "received_at": 1_795_776_224_123_456,
        "dead_lettered_at": 1_795_776_224_300_000,
        "reason": "UNKNOWN_CONNECTING_ALIAS",
        "detail": "no customer has alias otheralias",
        "principal_id": "mailco",
        "sending_facility": "otheralias{otheralias}",
        "message_control_id": "CTRL-7",
        "registry_version": "0123456789ab",
        "source_topic": "hl7.raw",
        "source_partition": 4,
        "source_offset": 99,
        "headers": {**HEADERS, "x-extra": "kept"},
        "payload": payload,
        "message_type": "ADT",
        "trigger_event": "A01",
    }
    assert codec.decode(codec.encode("hl7.deadletter", record))["headers"]["x-extra"] == "kept"


@pytest.mark.parametrize("received_at", ["", "12.5", "1e9", "abc", "99999999999999999999999", "١٢٣", " "])
def test_dead_letter_received_at_null_unless_decimal_long(received_at: str) -> None:
    raw = _raw(b"junk", {**HEADERS, "hl7.received_at": received_at})
    record = dead_letter_record(
        reason="MISSING_METADATA", detail="header hl7.received_at is not epoch micros", raw=raw,
        dead_lettered_at_us=0, registry_version="0123456789ab", header=None,
    )
    assert record["received_at"] is None


def test_dead_letter_without_headers_or_msh(codec: AvroCodec) -> None:
    raw = RawRecord(topic="hl7.raw", partition=0, offset=0, key=None, value=b"\x00\xffnot hl7", headers={})
    record = dead_letter_record(
        reason=Reason.MISSING_METADATA, detail="missing headers", raw=raw,
        dead_lettered_at_us=5, registry_version="0123456789ab", header=None,
    )
    for field in ("ingest_id", "received_at", "principal_id", "sending_facility", "message_control_id",
                  "message_type", "trigger_event"):
        assert record[field] is None, field
    assert record["headers"] == {} and record["payload"] == b"\x00\xffnot hl7"
    codec.encode("hl7.deadletter", record)


@pytest.mark.parametrize("reason", REASON_CODES)
def test_every_reason_code_encodes(codec: AvroCodec, reason: str) -> None:
    payload = seed_message()
    record = dead_letter_record(
        reason=reason, detail="d", raw=_raw(payload), dead_lettered_at_us=0,
        registry_version="0123456789ab", header=read_header(payload),
    )
    assert codec.decode(codec.encode("hl7.deadletter", record))["reason"] == reason


def test_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="NOPE"):
        dead_letter_record(reason="NOPE", detail="", raw=_raw(b""), dead_lettered_at_us=0,
                           registry_version="x", header=None)


def test_builder_errors_carry_no_patient_data() -> None:
    payload = seed_message()
    headers = {k: v for k, v in HEADERS.items() if k != "hl7.source_ip"}
    with pytest.raises(ValueError) as caught:
        accepted_record(_accepted(payload), _raw(payload, headers), 0)
    assert not any(marker in str(caught.value) for marker in PATIENT_MARKERS)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(
        st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=40))), max_size=10
    ),
    payload=st.binary(max_size=512),
)
def test_any_kafka_record_yields_an_encodable_dead_letter(
    topic_schemas: dict[str, Any], headers: list[tuple[str, bytes | None]], payload: bytes
) -> None:
    """Whatever arrives on hl7.raw can be dead-lettered: no record stops its partition."""
    raw = RawRecord(topic="hl7.raw", partition=1, offset=2, key=None, value=payload,
                    headers=decode_headers(headers))
    record = dead_letter_record(reason=Reason.MALFORMED_HL7, detail="unreadable", raw=raw,
                                dead_lettered_at_us=0, registry_version="v", header=None)
    codec = AvroCodec(topic_schemas)
    decoded = codec.decode(codec.encode("hl7.deadletter", record))
    assert decoded["payload"] == payload and decoded["headers"] == raw.headers
