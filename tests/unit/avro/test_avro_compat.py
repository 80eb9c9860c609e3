"""Schema evolution guard: the current schemas stay backward and forward compatible with v1.

``schemas_v1/`` holds frozen copies of the schemas as first released. Never edit them:
if a change to ``schemas/`` makes these tests fail, the change would break consumers
(or the replay of old dead letters). Add fields with defaults; never rename or remove.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro.read import SchemaResolutionError

from processor.avro.codec import AvroCodec
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema, schema_from_json, schemas_dir

SCHEMAS_V1 = Path(__file__).parent / "schemas_v1"
NAMES = [ACCEPTED_MESSAGE, DEAD_LETTER]


def _v1_text(name: str) -> str:
    return (SCHEMAS_V1 / f"{name}.avsc").read_text(encoding="utf-8")


def _current_text(name: str) -> str:
    return (schemas_dir() / f"{name}.avsc").read_text(encoding="utf-8")


def _write(schema_text: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(json.loads(schema_text)), record)
    return buffer.getvalue()


def _read(data: bytes, writer_text: str, reader_text: str) -> dict[str, Any]:
    return fastavro.schemaless_reader(
        io.BytesIO(data),
        fastavro.parse_schema(json.loads(writer_text)),
        fastavro.parse_schema(json.loads(reader_text)),
    )


def _compatible(reader_text: str, writer_text: str) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(reader_text), avro.schema.parse(writer_text)
    )
    return result.compatibility is SchemaCompatibilityType.compatible


def _fields(text: str) -> list[str]:
    return [f["name"] for f in json.loads(text)["fields"]]


@pytest.fixture
def samples(
    make_accepted: Callable[..., dict[str, Any]], make_dead_letter: Callable[..., dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    minimal_dead_letter = make_dead_letter(
        ingest_id=None, received_at=None, principal_id=None, sending_facility=None,
        message_control_id=None, headers={}, payload=b"", message_type=None,
    )
    return {
        ACCEPTED_MESSAGE: [make_accepted(), make_accepted(trigger_event=None, sending_application=None)],
        DEAD_LETTER: [make_dead_letter(), minimal_dead_letter],
    }


def _project(record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {k: record[k] for k in fields if k in record}


@pytest.mark.parametrize("name", NAMES)
def test_current_reads_v1_data(name: str, samples: dict[str, list[dict[str, Any]]]) -> None:
    v1, current = _v1_text(name), _current_text(name)
    assert _compatible(reader_text=current, writer_text=v1)
    for sample in samples[name]:
        written = _project(sample, _fields(v1))
        decoded = _read(_write(v1, written), v1, current)
        assert set(decoded) == set(_fields(current))
        for field in _fields(v1):
            assert _plain(decoded[field]) == _plain(written[field]), field


@pytest.mark.parametrize("name", NAMES)
def test_v1_reads_current_data(name: str, samples: dict[str, list[dict[str, Any]]]) -> None:
    v1, current = _v1_text(name), _current_text(name)
    assert _compatible(reader_text=v1, writer_text=current)
    for sample in samples[name]:
        written = _project(sample, _fields(current))
        decoded = _read(_write(current, written), current, v1)
        assert set(decoded) == set(_fields(v1))
        for field in _fields(v1):
            assert _plain(decoded[field]) == _plain(written[field]), field


@pytest.mark.parametrize("name", NAMES)
def test_codec_decodes_v1_single_object_values_into_the_current_shape(
    name: str, samples: dict[str, list[dict[str, Any]]]
) -> None:
    v1 = schema_from_json(_v1_text(name))
    topic = f"t.{name}"
    old_writer = AvroCodec({topic: v1})
    reader = AvroCodec({topic: load_schema(name)}, extra_writer_schemas=[v1])
    sample = _project(samples[name][0], _fields(_v1_text(name)))
    decoded = reader.decode(old_writer.encode(topic, sample))
    assert set(decoded) == set(_fields(_current_text(name)))


def test_guard_catches_a_renamed_field() -> None:
    """The checks above have teeth: renaming a field breaks v1 readers and is detected."""
    broken = json.loads(_current_text(DEAD_LETTER))
    for field in broken["fields"]:
        if field["name"] == "detail":
            field["name"] = "details"
    broken_text = json.dumps(broken)
    assert not _compatible(reader_text=_v1_text(DEAD_LETTER), writer_text=broken_text)
    assert not _compatible(reader_text=broken_text, writer_text=_v1_text(DEAD_LETTER))


def test_guard_catches_a_new_reason_code_only_without_the_enum_default() -> None:
    """Adding a reason code is safe because of the enum default; without it, it would not be."""
    evolved = json.loads(_current_text(DEAD_LETTER))
    reason = next(f for f in evolved["fields"] if f["name"] == "reason")["type"]
    reason["symbols"] = [*reason["symbols"], "SOMETHING_NEW"]
    data = _write(json.dumps(evolved), _dead_letter_with_reason("SOMETHING_NEW"))
    assert _read(data, json.dumps(evolved), _v1_text(DEAD_LETTER))["reason"] == "PROCESSING_ERROR"
    v1_without_default = json.loads(_v1_text(DEAD_LETTER))
    next(f for f in v1_without_default["fields"] if f["name"] == "reason")["type"].pop("default")
    with pytest.raises(SchemaResolutionError):
        _read(data, json.dumps(evolved), json.dumps(v1_without_default))


def _dead_letter_with_reason(reason: str) -> dict[str, Any]:
    return {
        "ingest_id": None, "received_at": None, "dead_lettered_at": 0, "reason": reason, "detail": "",
        "principal_id": None, "sending_facility": None, "message_control_id": None,
        "registry_version": "0", "source_topic": "t", "source_partition": 0, "source_offset": 0,
        "headers": {}, "payload": b"",
    }


def _plain(value: Any) -> Any:
    """Timestamps come back as datetimes: compare as epoch micros."""
    if isinstance(value, datetime):
        delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return value
