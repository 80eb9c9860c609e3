"""The schema-specialised writer writes exactly fastavro's bytes, and defers to it otherwise."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.avro.codec import AvroCodec, AvroEncodeError
from processor.avro.fastwrite import compile_writer
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema

ACCEPTED = load_schema(ACCEPTED_MESSAGE)
DEAD = load_schema(DEAD_LETTER)

_text = st.text(max_size=80)
_long = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_int = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def _value(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.none() | _value(schema[1])
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        if kind == "map":
            return st.dictionaries(_text, _text, max_size=8)
        return _value(kind)
    return {"string": _text, "bytes": st.binary(max_size=300), "int": _int, "long": _long}[schema]


def _records(schema: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f["name"]: _value(f["type"]) for f in schema["fields"]})


def _fastavro(schema: Any, record: dict[str, Any]) -> bytes:
    buffer = BytesIO()
    fastavro.schemaless_writer(buffer, schema, record, strict_allow_default=True)
    return buffer.getvalue()


@pytest.mark.parametrize("schema", [ACCEPTED, DEAD], ids=["accepted", "deadletter"])
def test_both_schemas_get_a_fast_writer(schema: Any) -> None:
    assert compile_writer(schema.parsed) is not None


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fast_writer_bytes_equal_fastavro(data: st.DataObject) -> None:
    for schema in (ACCEPTED, DEAD):
        record = data.draw(_records(schema.parsed))
        writer = compile_writer(schema.parsed)
        assert writer is not None
        assert writer(record) == _fastavro(schema.parsed, record)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_codec_values_equal_the_fastavro_path(data: st.DataObject) -> None:
    codec = AvroCodec({"a": ACCEPTED, "d": DEAD})
    for topic, schema in (("a", ACCEPTED), ("d", DEAD)):
        for _ in range(2):  # the first value primes the fast path
            record = data.draw(_records(schema.parsed))
            value = codec.encode(topic, record)
            assert value == b"\xc3\x01" + schema.fingerprint + _fastavro(schema.parsed, record)


def test_bad_records_still_fail_through_fastavro_after_the_fast_path_is_primed() -> None:
    codec = AvroCodec({"d": DEAD})
    good = {f["name"]: None for f in DEAD.parsed["fields"]}
    good.update(dead_lettered_at=1, reason="MALFORMED_HL7", detail="d", registry_version="v",
                source_topic="t", source_partition=0, source_offset=1, headers={}, payload=b"")
    codec.encode("d", good)
    for change, name in (({"reason": "NOPE"}, "reason"), ({"source_partition": 2**31}, None),
                         ({"source_partition": True}, None), ({"extra": "x"}, "extra"),
                         ({"headers": {"a": 1}}, "headers")):
        bad = {**good, **change}
        if name is None:  # fastavro accepts these (bool, unchecked int range): same bytes as before
            assert codec.encode("d", bad) == b"\xc3\x01" + DEAD.fingerprint + _fastavro(DEAD.parsed, bad)
            continue
        with pytest.raises(AvroEncodeError, match=name):
            codec.encode("d", bad)
    missing = dict(good)
    del missing["detail"]
    with pytest.raises(AvroEncodeError, match="detail"):
        codec.encode("d", missing)
    defaulted = dict(good)
    del defaulted["message_type"]  # has a default: fastavro fills it in
    assert codec.encode("d", defaulted) == codec.encode("d", good)


@pytest.mark.parametrize("bits", range(0, 64))
def test_long_boundaries_equal_fastavro(bits: int) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "L", "fields": [{"name": "v", "type": "long"}]})
    writer = compile_writer(schema)
    assert writer is not None
    for n in {(1 << bits) - 1, 1 << bits, (1 << bits) + 1, -(1 << bits), -(1 << bits) - 1}:
        if -(2**63) <= n < 2**63:
            assert writer({"v": n}) == _fastavro(schema, {"v": n})
