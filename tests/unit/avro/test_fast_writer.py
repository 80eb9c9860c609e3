"""The compiled Avro body writer against fastavro (the authority): identical bytes or a decline.

Differential property tests: for any record hypothesis builds, of either gateway schema
or of a generated schema, the compiled writer either declines (``None``: the codec then
hands the record to fastavro) or writes exactly fastavro's bytes; and for every record
that is well typed it does not decline, so the fast path is really taken.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.avro.codec import AvroCodec, AvroEncodeError
from processor.avro.fast_writer import compile_writer, zigzag_varint
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema, schemas_dir

ACCEPTED = load_schema(ACCEPTED_MESSAGE, schemas_dir(None)).parsed
DEADLETTER = load_schema(DEAD_LETTER, schemas_dir(None)).parsed
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1


def fastavro_body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def fastavro_or_error(schema: dict[str, Any], record: dict[str, Any]) -> bytes | None:
    try:
        return fastavro_body(schema, record)
    except Exception:  # noqa: BLE001 - any fastavro failure: the record is not writable
        return None


# Well-typed values, per field type of the gateway schemas (edges included: empty, non-ASCII,
# 64-bit limits, varint byte boundaries).
TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.sampled_from(["x" * 8191, "é" * 4096, "x" * 8192, "\U0001f600" * 2048]),  # 8191-8192 UTF-8 bytes
)
LONGS = st.one_of(
    st.integers(LONG_MIN, LONG_MAX),
    st.sampled_from([0, -1, 1, 63, -64, 64, 8191, 8192, 1 << 27, 1 << 41, 1 << 55, LONG_MIN, LONG_MAX]),
    st.integers(0, 4_102_444_800_000_000),  # epoch micros up to 2100
)
# Sizes around the writer's table limit (a length below 8192 is one table lookup).
BYTES = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n, tail: b"\x00" * n + tail, st.sampled_from([8191, 8192, 8193, 16384, 70000]), st.binary(max_size=2)),
)
# Values of the wrong Python type (or not writable at all): the writer must decline them or
# write what fastavro writes.
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.text(max_size=5),  # surrogates included
    st.binary(max_size=5),
    st.builds(bytearray, st.binary(max_size=5)),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


def value_for(schema: Any) -> st.SearchStrategy[Any]:
    """A well-typed value for a (parsed) field schema of the kinds the writer covers."""
    if isinstance(schema, list):
        return st.one_of(*(value_for(branch) for branch in schema))
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        if kind == "map":
            return st.dictionaries(TEXT, value_for(schema["values"]), max_size=4)
        return value_for(kind)
    return {
        "null": st.none(),
        "string": TEXT,
        "bytes": BYTES,
        "long": LONGS,
        "int": st.integers(-(1 << 31), (1 << 31) - 1),
    }[schema]


def records_for(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({field["name"]: value_for(field["type"]) for field in schema["fields"]})


def spoiled(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A well-typed record with one field given a wrong value or left out."""
    names = [field["name"] for field in schema["fields"]]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        record = draw(records_for(schema))
        name = draw(st.sampled_from(names))
        if draw(st.booleans()):
            del record[name]
        else:
            record[name] = draw(WRONG)
        return record

    return build()


@pytest.mark.parametrize("schema", [ACCEPTED, DEADLETTER], ids=["AcceptedMessage", "DeadLetter"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_well_typed_records_are_written_exactly_as_fastavro_writes_them(schema: dict[str, Any], data: Any) -> None:
    write = compile_writer(schema)
    assert write is not None  # both gateway schemas are covered
    record = data.draw(records_for(schema))
    assert write(record, b"") == fastavro_body(schema, record)
    assert write(record, b"\xc3\x01HEADER") == b"\xc3\x01HEADER" + fastavro_body(schema, record)


@pytest.mark.parametrize("schema", [ACCEPTED, DEADLETTER], ids=["AcceptedMessage", "DeadLetter"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_spoiled_record_is_declined_or_written_as_fastavro_writes_it(schema: dict[str, Any], data: Any) -> None:
    write = compile_writer(schema)
    assert write is not None
    record = data.draw(spoiled(schema))
    written = write(record, b"")
    if written is not None:
        assert written == fastavro_or_error(schema, record)


# Generated schemas: the covered field kinds, plus kinds the writer does not cover.
COVERED = st.one_of(
    st.sampled_from(["string", "bytes", "int", "long"]),
    st.just({"type": "long", "logicalType": "timestamp-micros"}),
    st.just({"type": "long", "logicalType": "timestamp-millis"}),
    st.builds(lambda n: {"type": "enum", "name": f"E{n}", "symbols": [f"S{i}" for i in range(n)]}, st.integers(1, 70)),
    st.just({"type": "map", "values": "string"}),
    st.sampled_from([["null", "string"], ["string", "null"], ["null", "long"], ["bytes", "null"], ["null", "int"]]),
)
NOT_COVERED = st.sampled_from(
    ["boolean", "float", "double", {"type": "array", "items": "long"}, {"type": "fixed", "name": "F", "size": 4},
     ["null", "string", "long"], ["string", "long"], {"type": "map", "values": "long"},
     {"type": "int", "logicalType": "date"}, {"type": "record", "name": "Inner", "fields": []}]
)


@st.composite
def schemas(draw: st.DrawFn, kinds: st.SearchStrategy[Any] = COVERED) -> dict[str, Any]:
    types = draw(st.lists(kinds, min_size=1, max_size=8))
    enums = 0
    fields = []
    for i, kind in enumerate(types):
        if isinstance(kind, dict) and kind.get("type") == "enum":  # named types need unique names
            kind = {**kind, "name": f"E{enums}"}
            enums += 1
        fields.append({"name": f"f{i}", "type": kind})
    return fastavro.parse_schema({"type": "record", "name": "R", "fields": fields})


@settings(max_examples=200, deadline=None)
@given(schema=schemas(), data=st.data())
def test_generated_schemas_are_written_exactly_as_fastavro_writes_them(schema: dict[str, Any], data: Any) -> None:
    write = compile_writer(schema)
    assert write is not None
    record = data.draw(records_for(schema))
    assert write(record, b"") == fastavro_body(schema, record)
    spoilt = data.draw(spoiled(schema))
    written = write(spoilt, b"")
    if written is not None:
        assert written == fastavro_or_error(schema, spoilt)


@settings(max_examples=100, deadline=None)
@given(covered=schemas(), extra=NOT_COVERED)
def test_a_schema_with_a_type_it_does_not_cover_is_left_to_fastavro(covered: dict[str, Any], extra: Any) -> None:
    raw = {"type": "record", "name": "R", "fields": [{"name": "f", "type": f["type"]} for f in covered["fields"][:1]]}
    raw["fields"].append({"name": "g", "type": extra})
    assert compile_writer(fastavro.parse_schema(raw)) is None


@given(st.integers(LONG_MIN, LONG_MAX))
def test_zigzag_varint_matches_fastavro_long(n: int) -> None:
    assert zigzag_varint(n) == fastavro_body(fastavro.parse_schema("long"), n)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [LONG_MIN - 1, LONG_MAX + 1, 1 << 70, -(1 << 70)])
def test_zigzag_varint_refuses_numbers_outside_64_bits(n: int) -> None:
    with pytest.raises(OverflowError):
        zigzag_varint(n)


def test_the_codec_writes_through_the_compiled_writer_and_falls_back_for_the_rest(
    make_accepted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = AvroCodec({"hl7.accepted": load_schema(ACCEPTED_MESSAGE, schemas_dir(None))})
    record = make_accepted()
    expected = codec.encode("hl7.accepted", record)
    assert expected[10:] == fastavro_body(ACCEPTED, record)

    calls = []
    real = fastavro.schemaless_writer
    monkeypatch.setattr(fastavro, "schemaless_writer", lambda *a: calls.append(1) or real(*a))
    assert codec.encode("hl7.accepted", record) == expected
    assert calls == []  # the well-typed record never reached fastavro
    missing_nullable = {k: v for k, v in record.items() if k != "character_set"}
    assert codec.encode("hl7.accepted", missing_nullable) == expected  # declined; fastavro writes null
    assert calls == [1]
    with pytest.raises(AvroEncodeError, match="source_offset"):
        codec.encode("hl7.accepted", {**record, "source_offset": "12"})
    assert calls == [1, 1]  # declined, and fastavro's refusal is the error


def test_generated_source_is_kept_for_reading() -> None:
    write = compile_writer(ACCEPTED)
    assert write is not None
    source = write.source  # type: ignore[attr-defined]
    assert source.startswith("def write(record, prefix=b''):")
    assert "record['payload']" in source

