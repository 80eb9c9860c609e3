"""Find, load and parse the Avro schema files (``accepted_message.avsc``, ``dead_letter.avsc``).

Schema files are package data, ``processor/schemas/*.avsc`` (the repository's top-level
``schemas/`` is a symlink to that directory), read through :mod:`importlib.resources` so a
wheel installed anywhere finds them. The setting ``HL7_SCHEMAS_DIR`` (``Settings.schemas_dir``)
names another directory to read them from instead (for testing new versions).

Each schema is parsed once (fastavro) and carries its Parsing Canonical Form and the
CRC-64-AVRO fingerprint used by single-object encoding. The canonical form follows
the Avro specification (and the Java implementation): logical types, docs and
defaults are stripped, so a ``timestamp-micros`` field is just ``"long"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from processor.errors import ConfigError

__all__ = [
    "ACCEPTED_MESSAGE",
    "DEAD_LETTER",
    "SCHEMAS_DIR_ENV",
    "AvroSchema",
    "crc64_avro",
    "load_schema",
    "schema_from_json",
    "schemas_dir",
]

ACCEPTED_MESSAGE = "accepted_message"
DEAD_LETTER = "dead_letter"
SCHEMAS_DIR_ENV = "HL7_SCHEMAS_DIR"  # the variable behind Settings.schemas_dir, named in errors


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """One parsed schema with everything the codec needs, computed once."""

    text: str  # the JSON text as written (registered with a schema registry)
    parsed: Any  # fastavro's parsed form, reused for every record
    full_name: str  # e.g. com.pkb.hl7gateway.AcceptedMessage
    canonical_form: str  # Parsing Canonical Form
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, 8 bytes little-endian

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.parsed.get("fields", ()))


def crc64_avro(canonical_form: str) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint, 8 bytes little-endian as single-object encoding wants.

    fastavro returns the hex of exactly those bytes (cross-checked against the ``avro``
    reference library in the tests).
    """
    return bytes.fromhex(_fastavro_fingerprint(canonical_form, "CRC-64-AVRO"))


def schema_from_json(schema: str | Mapping[str, Any]) -> AvroSchema:
    """Parse schema JSON text (or an already-loaded dict)."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    parsed = fastavro.parse_schema(json.loads(text))
    canonical = to_parsing_canonical_form(parsed)
    full_name = parsed["name"] if isinstance(parsed, dict) and "name" in parsed else canonical
    return AvroSchema(
        text=text,
        parsed=parsed,
        full_name=full_name,
        canonical_form=canonical,
        fingerprint=crc64_avro(canonical),
    )


def schemas_dir(configured: str | Path | None = None) -> Traversable:
    """``configured`` (``Settings.schemas_dir``, from ``HL7_SCHEMAS_DIR``) if given, else the
    package's ``processor/schemas/`` (package data).

    For a package on the file system (checkout, editable or wheel install) the
    result is a :class:`pathlib.Path`.
    """
    if configured:
        return Path(configured)
    return files("processor") / "schemas"


def load_schema(name: str, directory: Traversable | None = None) -> AvroSchema:
    """Load ``<directory>/<name>.avsc``; ``ConfigError`` names the file when unusable."""
    path = (directory or schemas_dir()) / f"{name}.avsc"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read Avro schema {path} (set {SCHEMAS_DIR_ENV}?): {exc.strerror}"
        ) from None
    try:
        return schema_from_json(text)
    except Exception as exc:  # noqa: BLE001 - fastavro's schema errors have no common base; any one is a ConfigError
        raise ConfigError(f"invalid Avro schema {path}: {exc}") from None
