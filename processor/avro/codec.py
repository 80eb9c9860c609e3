"""Avro values for Kafka: single-object encoding, or the Confluent wire format.

Without a schema registry every value is Avro single-object encoded (SPEC 5):
``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form + the Avro binary body. With a registry, values use the
Confluent wire format: ``00`` + the 4-byte big-endian schema id + the body, subject
``<topic>-value``. The id is resolved once per topic through confluent-kafka's
``SchemaRegistryClient`` (at construction, unless ``register=False``), then cached:

- auto-register on (``HL7_SCHEMA_REGISTRY_AUTO_REGISTER``; ``hl7-processor run``): the
  schema is registered (``register_schema``); a subject with no compatibility level of
  its own gets ``FULL_TRANSITIVE`` first, the rule our schemas are kept to;
- off (the production default): the subject must hold our schema (``lookup_schema``),
  or else its latest version must write our records losslessly (same record, every
  field of ours with the same type, any other field with a default): values are then
  written with that version and its id, as ``AvroSerializer`` does with
  ``use.latest.version``. Otherwise :class:`~processor.errors.ConfigError` (exit 2).
  A compatibility level ``NONE`` on the subject is logged as a warning.

Why not ``AvroSerializer`` itself on the hot path (its plain per-record cost is close to
ours: 11-12 vs 10-11 us for a 3 KB accepted record, confluent-kafka 2.16): it resolves
the id lazily, inside the first ``serialize`` call, i.e. inside a Kafka transaction where
a registry outage would look like a bad record; with ``use.latest.version`` it costs ~3x
(31-35 us: it re-expands the schema and runs the rule engine per record), and before
2.7 it wrote such values with its own schema behind the latest version's id; its
defaults move between releases (2.16: an ``ASSOCIATED`` subject strategy, an extra REST
call). The body is the same ``fastavro.schemaless_writer`` output behind the same 5-byte
header: ``tests/unit/avro/test_avro_registry*.py`` prove the bytes identical to
``AvroSerializer``'s in each mode, and that ``AvroDeserializer`` reads ours. Decoding
stays ours too (one path for both framings, resolution to the current schema per
writer, trailing-byte checks); it is not on the hot path.

The registry client comes from ``HL7_SCHEMA_REGISTRY_URL`` (which may carry
``user:password@`` for HTTP Basic auth) plus every other ``HL7_SCHEMA_REGISTRY_<NAME>``
as ``<name>`` (``Settings.schema_registry_extra``). ``mock://`` URLs
get confluent-kafka's in-memory registry (confluent-kafka 2.7+; tests only).

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

import logging
import struct
from collections.abc import Iterable, Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import expand_schema
from fastavro.validation import validate as _validate

from processor.avro.fast_writer import BodyWriter, compile_writer
from processor.avro.schemas import (
    ACCEPTED_MESSAGE,
    DEAD_LETTER,
    AvroSchema,
    load_schema,
    schema_from_json,
    schemas_dir,
)
from processor.errors import AvroEncodeError, ConfigError, SchemaRegistryUnavailable, UndecodableValue

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from processor.config import Settings

# AvroEncodeError, UndecodableValue and SchemaRegistryUnavailable live in processor.errors.
__all__ = [
    "SINGLE_OBJECT_MAGIC",
    "CONFLUENT_MAGIC",
    "AvroCodec",
    "AvroEncodeError",
    "UndecodableValue",
    "SchemaRegistryUnavailable",
    "AUTO_REGISTER_COMPATIBILITY",
    "registry_client",
    "registry_client_config",
]

log = logging.getLogger(__name__)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
_CONFLUENT_HEADER = struct.Struct(">bI")

# Set on a subject without a level of its own before auto-registering: our schemas change
# only by fields added with defaults (README, test_avro_compat), i.e. FULL, and readers
# (decode, replay, downstream) read the topics from the beginning, so TRANSITIVE.
AUTO_REGISTER_COMPATIBILITY = "FULL_TRANSITIVE"

# Registry client settings whose values never appear in an error text.
_SECRET_KEY_PARTS = ("auth", "password", "secret", "token", "user.info")
# Registry client settings that must be numbers (environment values are strings).
_NUMERIC_CLIENT_KEYS = frozenset(
    {
        "timeout",
        "cache.capacity",
        "cache.latest.ttl.sec",
        "max.retries",
        "retries.wait.ms",
        "retries.max.wait.ms",
    }
)


def _number(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value  # the client names the setting and the type it wants


def registry_client_config(settings: Settings) -> dict[str, Any]:
    """The ``SchemaRegistryClient`` configuration: ``HL7_SCHEMA_REGISTRY_*`` pass-through
    settings (``settings.schema_registry_extra``), then ``url`` from
    ``HL7_SCHEMA_REGISTRY_URL`` (not overridable)."""
    conf: dict[str, Any] = {
        key: _number(value) if key in _NUMERIC_CLIENT_KEYS else value
        for key, value in settings.schema_registry_extra.items()
    }
    conf["url"] = settings.schema_registry_url
    return conf


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """A client for ``HL7_SCHEMA_REGISTRY_URL``; ConfigError (without secrets) if it cannot be built.

    The constructor, not ``SchemaRegistryClient.new_client`` (confluent-kafka 2.7+), except
    for ``mock://`` URLs, which only ``new_client`` maps to the in-memory registry.
    """
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = registry_client_config(settings)
    url = str(conf["url"] or "")
    try:
        if url.startswith("mock://"):
            new_client = getattr(SchemaRegistryClient, "new_client", None)
            if new_client is None:
                raise ConfigError("HL7_SCHEMA_REGISTRY_URL mock://... needs confluent-kafka 2.7 or later")
            return new_client(conf)
        return SchemaRegistryClient(conf)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - ValueError/TypeError naming a setting, OSError for TLS files, ...
        text = str(exc)
        secrets = [url] + [str(v) for k, v in conf.items() if any(w in k for w in _SECRET_KEY_PARTS)]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "<redacted>")
        raise ConfigError(
            f"schema registry client refused HL7_SCHEMA_REGISTRY_* settings: {type(exc).__name__}: {text}"
        ) from None


class AvroCodec:
    """Encode records per topic and decode values of either wire format."""

    def __init__(
        self,
        topic_schemas: Mapping[str, AvroSchema],
        *,
        registry: SchemaRegistryClient | None = None,
        register: bool = True,
        auto_register: bool = False,
        extra_writer_schemas: Iterable[AvroSchema] = (),
    ) -> None:
        """``topic_schemas``: topic -> schema its records are built to.

        ``registry``: a Confluent schema registry client; switches encoding to the
        Confluent wire format. The schema ids are resolved at construction (errors:
        ConfigError / SchemaRegistryUnavailable); ``register=False`` defers that to the
        first ``encode`` (read-only tools never encode). ``auto_register``: register our
        schemas (True) or require the subject to hold a compatible one (False, see the
        module docstring).
        ``extra_writer_schemas``: older schema versions whose single-object values
        should still decode (looked up by fingerprint).
        """
        self._topic_schemas: dict[str, AvroSchema] = dict(topic_schemas)
        self._registry = registry
        self._auto_register = auto_register
        self._schema_ids: dict[str, int] = {}
        # Per topic with a registry: the writer schema (ours, or the subject's latest version
        # when that one writes our records losslessly) and the 5-byte Confluent header.
        self._writers: dict[str, AvroSchema] = {}
        self._headers: dict[str, bytes] = {}
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
        # Topic -> (writer schema, its compiled body writer) (processor.avro.fast_writer).
        self._fast_writers: dict[str, tuple[AvroSchema, BodyWriter | None]] = {}
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
        """The gateway's codec: accepted/dead-letter topics, registry from HL7_SCHEMA_REGISTRY_URL
        (+ pass-through settings), auto-registration from HL7_SCHEMA_REGISTRY_AUTO_REGISTER."""
        topic_schemas = {
            settings.topic_accepted: load_schema(ACCEPTED_MESSAGE, schemas_dir(settings.schemas_dir)),
            settings.topic_deadletter: load_schema(DEAD_LETTER, schemas_dir(settings.schemas_dir)),
        }
        if registry is None and settings.schema_registry_url:
            registry = registry_client(settings)
        return cls(
            topic_schemas,
            registry=registry,
            register=register,
            auto_register=settings.schema_registry_auto_register,
        )

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
        """Registry id values on ``topic`` are written with (resolved once, then cached);
        ``None`` without a registry."""
        if self._registry is None:
            return None
        cached = self._schema_ids.get(topic)
        if cached is not None:
            return cached
        schema_id, writer = self._resolve(topic, self.schema_for(topic))
        self._schema_ids[topic] = schema_id
        self._writers[topic] = writer
        self._headers[topic] = _CONFLUENT_HEADER.pack(0, schema_id)
        self._by_id[schema_id] = writer
        return schema_id

    def writer_schema(self, topic: str) -> AvroSchema:
        """The schema values on ``topic`` are written with: ours, or (registry, auto-register
        off) the subject's latest version when our schema is not registered there."""
        if self._registry is None:
            return self.schema_for(topic)
        self.schema_id(topic)
        return self._writers[topic]

    def _resolve(self, topic: str, ours: AvroSchema) -> tuple[int, AvroSchema]:
        """(schema id, writer schema) for ``topic`` from the registry, per ``auto_register``."""
        from confluent_kafka.schema_registry import Schema

        registry: Any = self._registry
        subject = f"{topic}-value"
        # Exactly what AvroSerializer registers and looks up for this schema text.
        candidate = Schema(ours.text.strip(), "AVRO")
        self._check_compatibility_level(subject)
        if self._auto_register:
            try:
                return int(registry.register_schema(subject, candidate)), ours
            except Exception as exc:  # noqa: BLE001 - registry boundary: HTTP, transport, TLS errors have no common base
                raise SchemaRegistryUnavailable(
                    f"cannot register {ours.full_name} under schema registry subject {subject}: "
                    f"{_describe(exc)}"
                ) from None
        try:
            return int(registry.lookup_schema(subject, candidate).schema_id), ours
        except Exception as exc:  # noqa: BLE001 - registry boundary: HTTP, transport, TLS errors have no common base
            if not _not_found(exc):
                raise SchemaRegistryUnavailable(
                    f"cannot look up {ours.full_name} in schema registry subject {subject}: {_describe(exc)}"
                ) from None
        try:
            latest = registry.get_latest_version(subject)
        except Exception as exc:  # noqa: BLE001 - registry boundary: HTTP, transport, TLS errors have no common base
            if not _not_found(exc):
                raise SchemaRegistryUnavailable(
                    f"cannot read schema registry subject {subject}: {_describe(exc)}"
                ) from None
            latest = None
        if latest is None:
            why = "it is empty"
        else:
            problems = _write_problems(ours, latest.schema.schema_str)
            if not problems:
                log.info(
                    "schema registry subject %s does not hold %s as is; writing with its latest "
                    "version %s (id %s), which holds every field of ours",
                    subject,
                    ours.full_name,
                    latest.version,
                    latest.schema_id,
                )
                return int(latest.schema_id), schema_from_json(latest.schema.schema_str)
            more = f", +{len(problems) - 3} more" if len(problems) > 3 else ""
            why = f"latest version {latest.version}: {', '.join(problems[:3])}{more}"
        raise ConfigError(
            f"schema registry subject {subject} holds no schema compatible with {ours.full_name} "
            f"({why}); register it there, or set HL7_SCHEMA_REGISTRY_AUTO_REGISTER=true"
        )

    def _check_compatibility_level(self, subject: str) -> None:
        """Auto-register on: give a subject without a level of its own AUTO_REGISTER_COMPATIBILITY.
        Warn when the subject's effective level is NONE (any change accepted). Failures to read
        or set the level (permissions, the mock registry) are warnings, never fatal."""
        registry: Any = self._registry
        if not _has_compatibility_api(registry):
            return
        try:
            try:
                level = registry.get_compatibility(subject)
            except Exception as exc:
                if not _not_found(exc):  # 404: no level of its own (40408) or no subject yet
                    raise
                if self._auto_register:
                    registry.set_compatibility(subject_name=subject, level=AUTO_REGISTER_COMPATIBILITY)
                    log.info(
                        "schema registry subject %s: compatibility level set to %s",
                        subject,
                        AUTO_REGISTER_COMPATIBILITY,
                    )
                    return
                level = registry.get_compatibility()  # the registry's global level applies
        except Exception as exc:  # noqa: BLE001 - best effort: a warning, never fatal
            log.warning(
                "schema registry subject %s: cannot read or set its compatibility level (%s)",
                subject,
                _describe(exc),
            )
            return
        if str(level).upper() == "NONE":
            log.warning(
                "schema registry subject %s: compatibility level NONE, the registry accepts any "
                "schema there and readers of the topic may break; set %s",
                subject,
                AUTO_REGISTER_COMPATIBILITY,
            )

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        """The Kafka value for ``record`` on ``topic`` (single-object or Confluent framing).

        The body is written by the schema's compiled writer (:mod:`processor.avro.fast_writer`,
        byte-identical), or by fastavro for whatever that writer declines; a record with a
        field the schema does not have, or a missing or mistyped one, raises
        AvroEncodeError naming the fields (never values).
        """
        schema = self.schema_for(topic)
        if self._registry is None:
            header, writer = SINGLE_OBJECT_MAGIC + schema.fingerprint, schema
        else:
            if topic not in self._headers:
                self.schema_id(topic)
            header, writer = self._headers[topic], self._writers[topic]
        known = self._field_names[topic].issuperset(record.keys())
        fast = self._fast_writer(topic, writer)
        if known and fast is not None:
            value = fast(record, header)
            if value is not None:
                return value
        buffer = BytesIO()  # fastavro: what the fast writer does not cover, and every error
        buffer.write(header)
        try:
            if not known:
                raise ValueError("unknown field")
            fastavro.schemaless_writer(buffer, writer.parsed, record)
        except Exception:  # noqa: BLE001 - fastavro fails on bad data in many ways; all mean "does not match"
            raise AvroEncodeError(
                f"record for topic {topic} does not match {schema.full_name}: "
                f"bad or missing fields {', '.join(_bad_fields(schema, record)) or '(unknown)'}"
            ) from None
        return buffer.getvalue()

    def _fast_writer(self, topic: str, schema: AvroSchema) -> BodyWriter | None:
        """The compiled body writer for ``topic``'s writer ``schema`` (None: fastavro writes
        it), built once per writer schema object."""
        compiled = self._fast_writers.get(topic)
        if compiled is None or compiled[0] is not schema:
            compiled = self._fast_writers[topic] = (schema, compile_writer(schema.parsed))
        return compiled[1]

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
            return self._read(self._registry_schema(schema_id), view[_CONFLUENT_HEADER.size :])
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
            schema = schema_from_json(registered.schema_str or "")  # no text: "" fails as JSON
        except Exception as exc:  # noqa: BLE001 - registry boundary (HTTP, transport, TLS) and schemas that do not parse
            raise UndecodableValue(f"cannot fetch schema id {schema_id}: {type(exc).__name__}") from None
        self._by_id[schema_id] = schema
        return schema

    def _read(self, writer: AvroSchema, body: memoryview) -> dict[str, Any]:
        reader = self._current_by_name.get(writer.full_name)
        reader_parsed = None if reader is None or reader.fingerprint == writer.fingerprint else reader.parsed
        stream = BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, writer.parsed, reader_parsed)
        except Exception as exc:  # noqa: BLE001 - corrupt bytes fail fastavro in many ways
            raise UndecodableValue(f"corrupt {writer.full_name} body: {type(exc).__name__}") from None
        if stream.tell() != len(body):
            raise UndecodableValue(
                f"{len(body) - stream.tell()} trailing bytes after {writer.full_name} body"
            )
        if not isinstance(record, dict):
            raise UndecodableValue(f"{writer.full_name} is not a record schema")
        return record


def _describe(exc: BaseException) -> str:
    """Type, HTTP status and registry error code of a registry failure, never its text
    (which may quote the URL and its credentials)."""
    status = getattr(exc, "http_status_code", None)
    code = getattr(exc, "error_code", None)
    if status is None and code is None:
        return type(exc).__name__
    return f"{type(exc).__name__} (http status {status}, error code {code})"


def _not_found(exc: BaseException) -> bool:
    return getattr(exc, "http_status_code", None) == 404


def _has_compatibility_api(registry: Any) -> bool:
    """False for confluent-kafka's in-memory ``mock://`` registry, which has no compatibility
    levels (its inherited REST call fails, after the client's retries, seconds later), unless
    a subclass provides them; False for objects without ``get_compatibility``."""
    if not callable(getattr(registry, "get_compatibility", None)):
        return False
    mro = type(registry).__mro__
    if not any(cls.__name__ == "MockSchemaRegistryClient" for cls in mro):
        return True
    owner = next(cls for cls in mro if "get_compatibility" in vars(cls))
    return owner.__name__ != "SchemaRegistryClient"


# Keys that decide how a value is written; doc, aliases, defaults, order and other
# properties do not.
_SHAPE_KEYS = (
    "type",
    "name",
    "symbols",
    "size",
    "items",
    "values",
    "fields",
    "logicalType",
    "precision",
    "scale",
)


def _shape(schema: Any) -> Any:
    """A schema (named types expanded, full names) reduced to what decides the bytes written,
    logical types included (unlike the Parsing Canonical Form)."""
    if isinstance(schema, list):
        return [_shape(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key in _SHAPE_KEYS:
        if key not in schema:
            continue
        value = schema[key]
        if key in ("items", "values") or (key == "type" and not isinstance(value, str)):
            value = _shape(value)
        elif key == "fields":
            value = [(field["name"], _shape(field["type"])) for field in value]
        out[key] = value
    return out["type"] if set(out) == {"type"} else out


def _expanded_record(parsed: Any) -> dict[str, Any] | None:
    """A parsed record schema with its named types expanded; ``None`` for any other schema."""
    expanded = expand_schema(parsed)
    return expanded if isinstance(expanded, dict) else None


def _write_problems(ours: AvroSchema, registered_text: str | None) -> list[str]:
    """Why the registered schema cannot write records built to ``ours`` without loss (empty:
    it can). Names fields, never data: a field of ours missing or typed differently there, or
    a field there that we do not set and that has no default."""
    try:
        theirs = schema_from_json(registered_text or "")
        their_record = _expanded_record(theirs.parsed)
    except Exception as exc:  # noqa: BLE001 - not Avro, or references to other subjects
        return [f"unreadable schema ({type(exc).__name__})"]
    our_record = _expanded_record(ours.parsed)
    if their_record is None or our_record is None or theirs.full_name != ours.full_name:
        return [f"record {theirs.full_name}, not {ours.full_name}"]
    our_types = {f["name"]: _shape(f["type"]) for f in our_record["fields"]}
    problems: list[str] = []
    their_names = set()
    for field in their_record["fields"]:
        name = field["name"]
        their_names.add(name)
        if name not in our_types:
            if "default" not in field:
                problems.append(f"{name} has no default")
        elif _shape(field["type"]) != our_types[name]:
            problems.append(f"{name} has another type")
    problems.extend(f"{name} missing" for name in our_types if name not in their_names)
    return problems


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
        except Exception:  # noqa: BLE001 - a validator failing counts as a bad field
            ok = False
        if not ok:
            bad.append(name)
    return bad
