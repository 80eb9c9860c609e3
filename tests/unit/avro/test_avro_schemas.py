"""The schema files honour SPEC section 5 and fingerprint like the Avro reference library."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from processor.avro.codec import AvroCodec
from processor.avro.schemas import (
    ACCEPTED_MESSAGE,
    DEAD_LETTER,
    SCHEMAS_DIR_ENV,
    crc64_avro,
    load_schema,
    schemas_dir,
)
from processor.config import load_settings
from processor.errors import ConfigError
from tests import contract

# SPEC 5's field lists, nullables and timestamps, from the hand-transcribed contract tables.
SPEC_FIELDS = {name: list(contract.AVRO_FIELDS[name]) for name in (ACCEPTED_MESSAGE, DEAD_LETTER)}
NULLABLE = {name: set(contract.AVRO_NULLABLE[name]) for name in (ACCEPTED_MESSAGE, DEAD_LETTER)}
TIMESTAMPS = {name: set(contract.AVRO_TIMESTAMP_MICROS[name]) for name in (ACCEPTED_MESSAGE, DEAD_LETTER)}


def _raw(name: str) -> dict[str, Any]:
    return json.loads((schemas_dir() / f"{name}.avsc").read_text(encoding="utf-8"))


def _fields(name: str) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in _raw(name)["fields"]}


def _strip_logical_types(node: Any) -> Any:
    """The schema with logicalType removed: same Parsing Canonical Form per the Avro spec."""
    if isinstance(node, dict):
        stripped = {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
        if set(stripped) == {"type"} and isinstance(stripped["type"], str):
            return stripped["type"]
        return stripped
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@pytest.mark.parametrize("name", [ACCEPTED_MESSAGE, DEAD_LETTER])
def test_spec_fields_present_and_extras_are_optional(name: str) -> None:
    fields = _fields(name)
    assert [n for n in fields if n in SPEC_FIELDS[name]] == SPEC_FIELDS[name]
    extras = [f for n, f in fields.items() if n not in SPEC_FIELDS[name]]
    for extra in extras:  # added fields must not break older writers' data
        assert "default" in extra, extra["name"]


@pytest.mark.parametrize("name", [ACCEPTED_MESSAGE, DEAD_LETTER])
def test_every_record_field_and_named_type_has_doc_and_namespace(name: str) -> None:
    schema = _raw(name)
    assert schema["namespace"] == "com.pkb.hl7gateway"
    assert schema["doc"].strip()
    for field in schema["fields"]:
        assert field.get("doc", "").strip(), field["name"]
        if isinstance(field["type"], dict) and field["type"].get("type") == "enum":
            assert field["type"].get("doc", "").strip(), field["name"]


@pytest.mark.parametrize("name", [ACCEPTED_MESSAGE, DEAD_LETTER])
def test_nullable_fields_are_null_first_unions_defaulting_to_null(name: str) -> None:
    fields = _fields(name)
    for field_name in NULLABLE[name]:
        field = fields[field_name]
        assert isinstance(field["type"], list) and field["type"][0] == "null", field_name
        assert "default" in field and field["default"] is None, field_name
    for field_name in SPEC_FIELDS[name]:
        if field_name not in NULLABLE[name]:
            assert not isinstance(fields[field_name]["type"], list), f"{field_name} must not be nullable"


@pytest.mark.parametrize("name", [ACCEPTED_MESSAGE, DEAD_LETTER])
def test_timestamps_are_timestamp_micros(name: str) -> None:
    fields = _fields(name)
    for field_name in TIMESTAMPS[name]:
        branches = fields[field_name]["type"]
        branches = branches if isinstance(branches, list) else [branches]
        (long_type,) = [b for b in branches if b != "null"]
        assert long_type == {"type": "long", "logicalType": "timestamp-micros"}


def test_accepted_types() -> None:
    fields = _fields(ACCEPTED_MESSAGE)
    assert fields["principal_type"]["type"]["type"] == "enum"
    assert tuple(fields["principal_type"]["type"]["symbols"]) == contract.ACCEPTED_PRINCIPAL_TYPE_SYMBOLS
    assert fields["payload"]["type"] == "bytes"
    assert fields["source_partition"]["type"] == "int"
    assert fields["source_offset"]["type"] == "long"


def test_dead_letter_reason_enum_is_the_reason_codes_with_a_safe_default() -> None:
    fields = _fields(DEAD_LETTER)
    reason = fields["reason"]["type"]
    assert reason["type"] == "enum"
    symbols = reason["symbols"]
    assert len(symbols) == len(set(symbols))
    # Only SPEC 3 codes (all of them: see the next test).
    assert set(symbols) <= set(contract.REASON_CODES)
    assert set(contract.REASON_CODES) - contract.reasons_of_rows(12, 12) <= set(symbols)
    assert reason["default"] == contract.UNEXPECTED_ERROR_REASON
    assert fields["headers"]["type"] == {"type": "map", "values": "string"}
    assert fields["payload"]["type"] == "bytes"


def test_dead_letter_reason_enum_holds_every_contract_reason() -> None:
    """SPEC 5: ``reason`` (enum of the reason codes in section 3), DUPLICATE included."""
    assert set(_fields(DEAD_LETTER)["reason"]["type"]["symbols"]) == set(contract.REASON_CODES)


def test_dead_letter_reason_enum_agrees_with_the_code() -> None:
    """The codec can write every reason the code has."""
    from processor.reasons import Reason

    assert set(_fields(DEAD_LETTER)["reason"]["type"]["symbols"]) == {r.value for r in Reason}


@pytest.mark.parametrize("name", [ACCEPTED_MESSAGE, DEAD_LETTER])
def test_reference_library_parses_schema_and_agrees_on_fingerprint(name: str) -> None:
    ours = load_schema(name)
    text = (schemas_dir() / f"{name}.avsc").read_text(encoding="utf-8")
    reference = avro.schema.parse(text)
    assert reference.fullname == ours.full_name
    # avro 1.12.2 keeps {"type":"long"} for logical types in its canonical form, which the
    # spec ([PRIMITIVES] + [STRIP]) and the Java library reduce to "long". So compare on the
    # logical-type-free schema, whose canonical form is the same by definition.
    stripped = avro.schema.parse(json.dumps(_strip_logical_types(json.loads(text))))
    assert stripped.canonical_form == ours.canonical_form
    assert stripped.fingerprint("CRC-64-AVRO") == ours.fingerprint
    assert len(ours.fingerprint) == 8


def test_crc64_matches_reference_implementation_on_primitives() -> None:
    for primitive in ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]:
        assert crc64_avro(f'"{primitive}"') == avro.schema.parse(f'"{primitive}"').fingerprint()
    # Published value (Java SchemaNormalization.parsingFingerprint64 of "int"), little-endian.
    assert crc64_avro('"int"') == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_schemas_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(schemas_dir() / f"{DEAD_LETTER}.avsc", tmp_path / f"{DEAD_LETTER}.avsc")
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(tmp_path))
    settings = load_settings()
    assert settings.schemas_dir == tmp_path and schemas_dir(settings.schemas_dir) == tmp_path
    assert (
        load_schema(DEAD_LETTER, schemas_dir(settings.schemas_dir)).full_name
        == "com.pkb.hl7gateway.DeadLetter"
    )
    with pytest.raises(ConfigError, match=SCHEMAS_DIR_ENV):
        load_schema(ACCEPTED_MESSAGE, schemas_dir(settings.schemas_dir))
    with pytest.raises(ConfigError, match=SCHEMAS_DIR_ENV):  # the codec reads them from there too
        AvroCodec.from_settings(settings)


def test_invalid_schema_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.avsc").write_text('{"type": "record", "name": "X", "fields": [{"name": "a"}]}')
    with pytest.raises(ConfigError, match="broken.avsc"):
        load_schema("broken", tmp_path)
