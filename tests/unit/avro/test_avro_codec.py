"""Values on the wire: single-object and Confluent framing, read back by independent decoders."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.avro.codec import AvroCodec, AvroEncodeError, SchemaRegistryUnavailable, UndecodableValue
from processor.avro.schemas import DEAD_LETTER, AvroSchema, schemas_dir
from processor.reasons import REASON_CODES

ACCEPTED = "hl7.accepted"
DEADLETTER = "hl7.deadletter"


def _micros(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _as_written(decoded: dict[str, Any], timestamp_fields: set[str]) -> dict[str, Any]:
    """Decoded record with timestamps turned back into epoch micros, for comparison."""
    return {
        k: (_micros(v) if k in timestamp_fields and isinstance(v, datetime) else v) for k, v in decoded.items()
    }


class CountingRegistry:
    """Wraps the mock registry to count registrations (the client under test is real)."""

    def __init__(self, inner: SchemaRegistryClient) -> None:
        self.inner = inner
        self.registrations = 0

    def register_schema(self, subject: str, schema: Any, normalize_schemas: bool = False) -> int:
        self.registrations += 1
        return self.inner.register_schema(subject, schema, normalize_schemas)

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_schema(schema_id, *args, **kwargs)


@pytest.fixture
def registry() -> SchemaRegistryClient:
    if not hasattr(SchemaRegistryClient, "new_client"):
        pytest.skip("mock:// registry needs confluent-kafka 2.7+")
    return SchemaRegistryClient.new_client({"url": "mock://test"})


# --- single-object encoding -------------------------------------------------------------


def test_single_object_layout_and_reference_decoder(
    codec: AvroCodec, make_accepted: Callable[..., dict[str, Any]]
) -> None:
    record = make_accepted()
    data = codec.encode(ACCEPTED, record)
    assert codec.wire_format == "single-object"
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.schema_for(ACCEPTED).fingerprint
    # The avro reference library reads the body with the schema file as written.
    text = (schemas_dir() / "accepted_message.avsc").read_text(encoding="utf-8")
    reader = avro.io.DatumReader(avro.schema.parse(text))
    decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert _as_written(decoded, {"received_at", "processed_at"}) == record


def test_single_object_dead_letter_reference_decoder(
    codec: AvroCodec, make_dead_letter: Callable[..., dict[str, Any]]
) -> None:
    record = make_dead_letter()
    data = codec.encode(DEADLETTER, record)
    text = (schemas_dir() / "dead_letter.avsc").read_text(encoding="utf-8")
    decoded = avro.io.DatumReader(avro.schema.parse(text)).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert _as_written(decoded, {"received_at", "dead_lettered_at"}) == record


def test_round_trip_returns_utc_datetimes_and_verbatim_bytes(
    codec: AvroCodec, make_accepted: Callable[..., dict[str, Any]]
) -> None:
    record = make_accepted()
    decoded = codec.decode(codec.encode(ACCEPTED, record))
    assert decoded["received_at"] == datetime(2026, 11, 27, 10, 43, 44, 123456, tzinfo=timezone.utc)
    assert decoded["payload"] == record["payload"]
    assert _as_written(decoded, {"received_at", "processed_at"}) == record


def test_fields_with_defaults_may_be_omitted(codec: AvroCodec, make_accepted: Callable[..., dict[str, Any]]) -> None:
    record = make_accepted()
    for optional in ("trigger_event", "sending_application", "message_structure", "character_set"):
        del record[optional]
    decoded = codec.decode(codec.encode(ACCEPTED, record))
    assert decoded["trigger_event"] is None and decoded["character_set"] is None


@settings(max_examples=150, deadline=None)
@given(
    reason=st.sampled_from(REASON_CODES),
    detail=st.text(max_size=200),
    optional_text=st.one_of(st.none(), st.text(max_size=50)),
    received_at=st.one_of(st.none(), st.integers(min_value=0, max_value=253_402_300_799_999_999)),
    headers=st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=8),
    payload=st.binary(max_size=2048),
    partition=st.integers(min_value=0, max_value=2**31 - 1),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_any_dead_letter_round_trips(
    topic_schemas: dict[str, AvroSchema],
    reason: str,
    detail: str,
    optional_text: str | None,
    received_at: int | None,
    headers: dict[str, str],
    payload: bytes,
    partition: int,
    offset: int,
) -> None:
    codec = AvroCodec(topic_schemas)
    record = {
        "ingest_id": optional_text,
        "received_at": received_at,
        "dead_lettered_at": 1,
        "reason": reason,
        "detail": detail,
        "principal_id": optional_text,
        "sending_facility": optional_text,
        "message_control_id": optional_text,
        "registry_version": "0123456789ab",
        "source_topic": "hl7.raw",
        "source_partition": partition,
        "source_offset": offset,
        "headers": headers,
        "payload": payload,
        "message_type": optional_text,
        "trigger_event": None,
    }
    decoded = codec.decode(codec.encode(DEADLETTER, record))
    assert _as_written(decoded, {"received_at", "dead_lettered_at"}) == record


# --- Confluent wire format ---------------------------------------------------------------


def test_confluent_framing_with_registered_schema(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_accepted: Callable[..., dict[str, Any]],
    make_dead_letter: Callable[..., dict[str, Any]],
) -> None:
    codec = AvroCodec(topic_schemas, registry=registry, auto_register=True)
    assert codec.wire_format == "confluent"
    for topic, record, stamps in (
        (ACCEPTED, make_accepted(), {"received_at", "processed_at"}),
        (DEADLETTER, make_dead_letter(), {"received_at", "dead_lettered_at"}),
    ):
        data = codec.encode(topic, record)
        latest = registry.get_latest_version(f"{topic}-value")
        assert data[0] == 0
        assert int.from_bytes(data[1:5], "big") == latest.schema_id == codec.schema_id(topic)
        # Independent decode: fastavro with the schema text the registry holds.
        registered = registry.get_schema(latest.schema_id)
        writer = fastavro.parse_schema(json.loads(registered.schema_str))
        decoded = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer)
        assert _as_written(decoded, stamps) == record
        assert _as_written(codec.decode(data), stamps) == record


def test_schemas_registered_once_at_construction(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_accepted: Callable[..., dict[str, Any]],
) -> None:
    counting = CountingRegistry(registry)
    codec = AvroCodec(topic_schemas, registry=counting, auto_register=True)  # type: ignore[arg-type]
    assert counting.registrations == 2
    for _ in range(5):
        codec.encode(ACCEPTED, make_accepted())
    assert counting.registrations == 2
    assert sorted(registry.get_subjects()) == [f"{ACCEPTED}-value", f"{DEADLETTER}-value"]


def test_read_only_codec_fetches_writer_schema_by_id(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_dead_letter: Callable[..., dict[str, Any]],
) -> None:
    data = AvroCodec(topic_schemas, registry=registry, auto_register=True).encode(DEADLETTER, make_dead_letter())
    reader = AvroCodec({}, registry=registry, register=False)
    assert reader.decode(data)["reason"] == "PARTNER_NOT_AUTHORISED"


def test_confluent_value_without_registry_is_undecodable(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    codec: AvroCodec,
    make_dead_letter: Callable[..., dict[str, Any]],
) -> None:
    data = AvroCodec(topic_schemas, registry=registry, auto_register=True).encode(DEADLETTER, make_dead_letter())
    with pytest.raises(UndecodableValue, match="no schema registry"):
        codec.decode(data)


def test_unknown_schema_id_is_undecodable(registry: SchemaRegistryClient) -> None:
    codec = AvroCodec({}, registry=registry, register=False)
    with pytest.raises(UndecodableValue, match="schema id 4242"):
        codec.decode(b"\x00" + (4242).to_bytes(4, "big") + b"\x00")


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"\xc3\x01\x00\x01", b"MSH|^~\\&|", b"\x00\x00\x00"],
    ids=["empty", "magic-only", "short-fingerprint", "raw-hl7", "short-confluent"],
)
def test_garbage_is_undecodable(codec: AvroCodec, data: bytes) -> None:
    with pytest.raises(UndecodableValue):
        codec.decode(data)


def test_unknown_fingerprint_is_undecodable(codec: AvroCodec) -> None:
    with pytest.raises(UndecodableValue, match="0102030405060708"):
        codec.decode(b"\xc3\x01" + bytes(range(1, 9)) + b"\x00")


def test_truncated_and_padded_bodies_are_undecodable(
    codec: AvroCodec, make_accepted: Callable[..., dict[str, Any]]
) -> None:
    data = codec.encode(ACCEPTED, make_accepted())
    with pytest.raises(UndecodableValue):
        codec.decode(data[:-20])
    with pytest.raises(UndecodableValue, match="trailing"):
        codec.decode(data + b"\x00")


def test_encode_error_names_fields_never_values(
    codec: AvroCodec, make_accepted: Callable[..., dict[str, Any]]
) -> None:
    secret = "SMITH^JOHN 1970-01-01"
    record = make_accepted(source_partition=secret, surprise=secret)
    del record["ingest_id"]
    with pytest.raises(AvroEncodeError) as caught:
        codec.encode(ACCEPTED, record)
    message = str(caught.value)
    assert "source_partition" in message and "surprise" in message and "ingest_id" in message
    assert secret not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_bad_enum_symbol_is_rejected(codec: AvroCodec, make_dead_letter: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(AvroEncodeError, match="reason"):
        codec.encode(DEADLETTER, make_dead_letter(reason="NOT_A_REASON"))


def test_unknown_topic_is_rejected(codec: AvroCodec, make_accepted: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(AvroEncodeError, match="hl7.other"):
        codec.encode("hl7.other", make_accepted())


def test_dead_letter_schema_name_constant_matches_file() -> None:
    assert (schemas_dir() / f"{DEAD_LETTER}.avsc").is_file()


def test_incompatible_registration_is_reported_without_the_url(
    topic_schemas: dict[str, AvroSchema],
) -> None:
    class Refusing:
        def register_schema(self, subject: str, schema: Any, normalize_schemas: bool = False) -> int:
            raise RuntimeError("409 at https://user:secret@registry.example")

    with pytest.raises(SchemaRegistryUnavailable) as caught:
        AvroCodec(topic_schemas, registry=Refusing(), auto_register=True)  # type: ignore[arg-type]
    assert "hl7.accepted-value" in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.skipif(not hasattr(SchemaRegistryClient, "new_client"), reason="mock:// registry needs confluent-kafka 2.7+")
def test_from_settings_picks_wire_format_from_schema_registry_url(
    make_accepted: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from processor.config import load_settings

    monkeypatch.delenv("HL7_SCHEMA_REGISTRY_URL", raising=False)
    plain = AvroCodec.from_settings(load_settings(schema_registry_url=None, topic_accepted="a.acc"))
    assert plain.wire_format == "single-object"
    assert plain.encode("a.acc", make_accepted())[:2] == b"\xc3\x01"
    confluent = AvroCodec.from_settings(
        load_settings(schema_registry_url="mock://settings", schema_registry_auto_register=True, topic_accepted="a.acc")
    )
    assert confluent.wire_format == "confluent"
    data = confluent.encode("a.acc", make_accepted())
    assert data[0] == 0 and confluent.decode(data)["ingest_id"] == make_accepted()["ingest_id"]
