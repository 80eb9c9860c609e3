"""Avro values for Kafka: single-object encoding, or the Confluent wire format.

Without a schema registry every value is Avro single-object encoded (SPEC 5):
``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form + the Avro binary body. With a registry, values use the
Confluent wire format: ``00`` + the 4-byte big-endian schema id + the body, with the
schema registered under the subject ``<topic>-value`` once (at construction, unless
``register=False``) and its id cached. ``HL7_SCHEMA_REGISTRY_URL`` may carry
``user:password@`` for HTTP Basic auth (handled by the Confluent client).

``decode`` dispatches on the first byte, so it reads both formats. The writer schema
comes from the fingerprint (schemas this codec knows) or from the registry by id
(cached). When the writer schema has the full name of one of the codec's current
schemas, the record is resolved to the current schema (Avro schema resolution), so
callers always see the current field set: fields added later get their defaults.
Decoded timestamps are timezone-aware UTC ``datetime`` objects, enums ``str``,
``bytes`` fields ``bytes``.

Errors never quote record content: they name the topic, schema and fields only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.validation import validate as _validate

from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, AvroSchema, load_schema, schema_from_json
from processor.errors import GatewayError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from processor.config import Settings

__all__ = [
    "SINGLE_OBJECT_MAGIC",
    "CONFLUENT_MAGIC",
    "AvroCodec",
    "AvroEncodeError",
    "UndecodableValue",
    "SchemaRegistryUnavailable",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
_CONFLUENT_HEADER = struct.Struct(">bI")


class AvroEncodeError(GatewayError, ValueError):
    """A record does not match its topic's schema (names the fields, never their values)."""


class UndecodableValue(GatewayError, ValueError):
    """Bytes that are not an Avro value this codec can read."""


class SchemaRegistryUnavailable(GatewayError):
    """The schema registry refused or could not take a registration (e.g. incompatible schema)."""


class AvroCodec:
    """Encode records per topic and decode values of either wire format."""

    def __init__(
        self,
        topic_schemas: Mapping[str, AvroSchema],
        *,
        registry: SchemaRegistryClient | None = None,
        register: bool = True,
        extra_writer_schemas: Iterable[AvroSchema] = (),
    ) -> None:
        """``topic_schemas``: topic -> schema its values are written with.

        ``registry``: a Confluent schema registry client; switches encoding to the
        Confluent wire format. ``register=False`` skips registration at construction
        (read-only tools); ``encode`` then registers on first use.
        ``extra_writer_schemas``: older schema versions whose single-object values
        should still decode (looked up by fingerprint).
        """
        self._topic_schemas: dict[str, AvroSchema] = dict(topic_schemas)
        self._registry = registry
        self._schema_ids: dict[str, int] = {}
        self._by_fingerprint: dict[bytes, AvroSchema] = {}
        self._by_id: dict[int, AvroSchema] = {}
        self._current_by_name: dict[str, AvroSchema] = {}
        for schema in (*extra_writer_schemas, *self._topic_schemas.values()):
            self._by_fingerprint[schema.fingerprint] = schema
        for schema in self._topic_schemas.values():
            self._current_by_name[schema.full_name] = schema
        # Field names per topic: a record holding any other key is refused before writing
        # (fastavro's strict mode does the same, at a third of the write's cost).
        self._field_names: dict[str, frozenset[str]] = {
            topic: frozenset(f["name"] for f in schema.parsed["fields"])
            for topic, schema in self._topic_schemas.items()
        }
        if registry is not None and register:
            for topic in self._topic_schemas:
                self.schema_id(topic)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        registry: SchemaRegistryClient | None = None,
        register: bool = True,
    ) -> AvroCodec:
        """The gateway's codec: accepted/dead-letter topics, registry from HL7_SCHEMA_REGISTRY_URL."""
        topic_schemas = {
            settings.topic_accepted: load_schema(ACCEPTED_MESSAGE),
            settings.topic_deadletter: load_schema(DEAD_LETTER),
        }
        if registry is None and settings.schema_registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            registry = SchemaRegistryClient.new_client({"url": settings.schema_registry_url})
        return cls(topic_schemas, registry=registry, register=register)

    @property
    def wire_format(self) -> str:
        """``"confluent"`` with a schema registry, else ``"single-object"``."""
        return "confluent" if self._registry is not None else "single-object"

    def schema_for(self, topic: str) -> AvroSchema:
        try:
            return self._topic_schemas[topic]
        except KeyError:
            raise AvroEncodeError(f"no Avro schema configured for topic {topic}") from None

    def schema_id(self, topic: str) -> int | None:
        """Registry id of the topic's schema (registered once, then cached); ``None`` without a registry."""
        if self._registry is None:
            return None
        cached = self._schema_ids.get(topic)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry import Schema

        schema = self.schema_for(topic)
        subject = f"{topic}-value"
        try:
            schema_id = int(self._registry.register_schema(subject, Schema(schema.text, "AVRO")))
        except Exception as exc:
            # Only the status/code: the registry URL may carry credentials.
            status = getattr(exc, "http_status_code", None)
            code = getattr(exc, "error_code", None)
            raise SchemaRegistryUnavailable(
                f"cannot register {schema.full_name} under subject {subject}: "
                f"{type(exc).__name__} (http status {status}, error code {code})"
            ) from None
        self._schema_ids[topic] = schema_id
        self._by_id[schema_id] = schema
        return schema_id

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        """The Kafka value for ``record`` on ``topic`` (single-object or Confluent framing).

        fastavro writes the body; a record with a field the schema does not have, or a
        missing or mistyped one, raises AvroEncodeError naming the fields (never values).
        """
        schema = self.schema_for(topic)
        buffer = BytesIO()
        if self._registry is None:
            buffer.write(SINGLE_OBJECT_MAGIC)
            buffer.write(schema.fingerprint)
        else:
            buffer.write(_CONFLUENT_HEADER.pack(0, self.schema_id(topic)))  # type: ignore[arg-type]
        try:
            if not self._field_names[topic].issuperset(record.keys()):
                raise ValueError("unknown field")
            fastavro.schemaless_writer(buffer, schema.parsed, record)
        except Exception:
            raise AvroEncodeError(
                f"record for topic {topic} does not match {schema.full_name}: "
                f"bad or missing fields {', '.join(_bad_fields(schema, record)) or '(unknown)'}"
            ) from None
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in a value written by ``encode`` (or any producer using a known schema)."""
        view = memoryview(data)
        if bytes(view[:2]) == SINGLE_OBJECT_MAGIC:
            if len(view) < _SINGLE_OBJECT_HEADER:
                raise UndecodableValue("single-object value shorter than its header")
            fp = bytes(view[2:_SINGLE_OBJECT_HEADER])
            writer = self._by_fingerprint.get(fp)
            if writer is None:
                raise UndecodableValue(f"unknown writer schema fingerprint {fp.hex()}")
            return self._read(writer, view[_SINGLE_OBJECT_HEADER:])
        if bytes(view[:1]) == CONFLUENT_MAGIC:
            if len(view) < _CONFLUENT_HEADER.size:
                raise UndecodableValue("Confluent value shorter than its header")
            _, schema_id = _CONFLUENT_HEADER.unpack_from(view)
            return self._read(self._registry_schema(schema_id), view[_CONFLUENT_HEADER.size:])
        raise UndecodableValue("value is neither Avro single-object nor Confluent framed")

    def _registry_schema(self, schema_id: int) -> AvroSchema:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if self._registry is None:
            raise UndecodableValue(
                f"Confluent-framed value (schema id {schema_id}) but no schema registry configured"
            )
        try:
            registered = self._registry.get_schema(schema_id)
            schema = schema_from_json(registered.schema_str)
        except Exception as exc:
            raise UndecodableValue(f"cannot fetch schema id {schema_id}: {type(exc).__name__}") from None
        self._by_id[schema_id] = schema
        return schema

    def _read(self, writer: AvroSchema, body: memoryview) -> dict[str, Any]:
        reader = self._current_by_name.get(writer.full_name)
        reader_parsed = None if reader is None or reader.fingerprint == writer.fingerprint else reader.parsed
        stream = BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, writer.parsed, reader_parsed)
        except Exception as exc:
            raise UndecodableValue(f"corrupt {writer.full_name} body: {type(exc).__name__}") from None
        if stream.tell() != len(body):
            raise UndecodableValue(f"{len(body) - stream.tell()} trailing bytes after {writer.full_name} body")
        if not isinstance(record, dict):
            raise UndecodableValue(f"{writer.full_name} is not a record schema")
        return record


def _bad_fields(schema: AvroSchema, record: Mapping[str, Any]) -> list[str]:
    """Names of fields that are missing, unknown or of the wrong type."""
    if not isinstance(record, Mapping):
        return ["(record is not a mapping)"]
    fields = schema.parsed.get("fields", ())
    known = {f["name"] for f in fields}
    bad = [f"{name} (unknown)" for name in record if name not in known]
    for field in fields:
        name = field["name"]
        if name not in record:
            if "default" not in field:
                bad.append(f"{name} (missing)")
            continue
        try:
            ok = _validate(record[name], field["type"], field=name, raise_errors=False)
        except Exception:
            ok = False
        if not ok:
            bad.append(name)
    return bad
