"""Schema registry: id resolution (auto-register on/off), compatibility levels, interop with
confluent-kafka's AvroSerializer / AvroDeserializer, and the HL7_SCHEMA_REGISTRY_* settings.

Registries are confluent-kafka's in-memory ``mock://`` client (2.7+); compatibility levels,
which the mock lacks, come from a small subclass. The codec writes the Confluent wire format
itself (fastavro body behind ``00`` + 4-byte id): the differential tests prove its bytes
identical to AvroSerializer's in each mode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import avro.schema
import certifi
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from processor.avro.codec import (
    AUTO_REGISTER_COMPATIBILITY,
    AvroCodec,
    SchemaRegistryUnavailable,
    registry_client,
    registry_client_config,
)
from processor.avro.schemas import AvroSchema
from processor.config import Settings, load_settings, schema_registry_passthrough
from processor.errors import ConfigError

ACCEPTED = "hl7.accepted"
DEADLETTER = "hl7.deadletter"
# The mock:// registry (SchemaRegistryClient.new_client) exists from confluent-kafka 2.7;
# test_avro_registry_http.py covers older versions.
needs_mock = pytest.mark.skipif(
    not hasattr(SchemaRegistryClient, "new_client"), reason="mock:// registry needs confluent-kafka 2.7+"
)
STAMPS = {ACCEPTED: {"received_at", "processed_at"}, DEADLETTER: {"received_at", "dead_lettered_at"}}


def _micros(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _as_written(decoded: dict[str, Any], topic: str) -> dict[str, Any]:
    return {k: (_micros(v) if k in STAMPS[topic] and isinstance(v, datetime) else v) for k, v in decoded.items()}


def _ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def _serializer(registry: SchemaRegistryClient, schema: AvroSchema, **conf: Any) -> AvroSerializer:
    """AvroSerializer pinned to the SPEC's subject ``<topic>-value`` (2.16 defaults to ASSOCIATED)."""
    return AvroSerializer(
        registry, schema.text, conf={"subject.name.strategy": topic_subject_name_strategy, **conf}
    )


def _variant(schema: AvroSchema, change: Callable[[dict[str, Any]], None]) -> str:
    """The schema's JSON text after ``change`` edits its parsed JSON."""
    doc = json.loads(schema.text)
    change(doc)
    return json.dumps(doc)


def _field(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in doc["fields"] if f["name"] == name)


def _samples(topic: str, make_accepted: Callable[..., dict[str, Any]], make_dead_letter: Callable[..., dict[str, Any]]):  # type: ignore[no-untyped-def]
    if topic == ACCEPTED:
        return [
            make_accepted(),
            make_accepted(trigger_event=None, sending_application=None, payload=b"", source_offset=2**63 - 1),
            make_accepted(connecting_alias="ünïcödé ✓", character_set="UNICODE UTF-8"),
        ]
    return [make_dead_letter(), make_dead_letter(ingest_id=None, received_at=None, headers={}, payload=b"\x00")]


def levels_registry(
    global_level: str = "BACKWARD", subject_levels: dict[str, str] | None = None, *, refuse: bool = False
) -> Any:
    """The mock registry plus compatibility levels (which the mock lacks), in memory.

    A subclass of the installed version's own mock class (whatever module it lives in);
    levels answer like Confluent Schema Registry: a subject without its own level is 404
    (40408); ``refuse``: every level request is 403.
    """
    base = type(SchemaRegistryClient.new_client({"url": "mock://levels"}))

    class Levels(base):  # type: ignore[misc, valid-type]
        def get_compatibility(self, subject_name: str | None = None) -> str:
            if refuse:
                raise SchemaRegistryError(403, 40301, "User is denied operation")
            if subject_name is None:
                return self.global_level
            if subject_name not in self.subject_levels:
                raise SchemaRegistryError(404, 40408, "Subject does not have subject-level compatibility configured")
            return self.subject_levels[subject_name]

        def set_compatibility(self, subject_name: str | None = None, level: str | None = None) -> str:
            assert level is not None
            if subject_name is None:
                self.global_level = level
            else:
                self.subject_levels[subject_name] = level
            return level

    client = Levels({"url": "mock://levels"})
    client.global_level = global_level
    client.subject_levels = dict(subject_levels or {})
    return client


@pytest.fixture
def registry() -> SchemaRegistryClient:
    if not hasattr(SchemaRegistryClient, "new_client"):
        pytest.skip("mock:// registry needs confluent-kafka 2.7+")
    return SchemaRegistryClient.new_client({"url": "mock://registry-tests"})


def _prefill(registry: SchemaRegistryClient, n: int = 3) -> None:
    """Unrelated registrations first, so the id under test is not simply 1."""
    for i in range(n):
        registry.register_schema(f"other-{i}-value", Schema(json.dumps({"type": "fixed", "name": f"F{i}", "size": 1}), "AVRO"))


# --- the wire format, read by the official deserializer ---------------------------------


@pytest.mark.parametrize("topic", [ACCEPTED, DEADLETTER])
def test_wire_format_decodes_with_avro_deserializer(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_accepted: Callable[..., dict[str, Any]],
    make_dead_letter: Callable[..., dict[str, Any]],
    topic: str,
) -> None:
    codec = AvroCodec(topic_schemas, registry=registry, auto_register=True)
    deserializer = AvroDeserializer(registry)
    for record in _samples(topic, make_accepted, make_dead_letter):
        data = codec.encode(topic, record)
        assert data[0] == 0
        assert int.from_bytes(data[1:5], "big") == codec.schema_id(topic)
        assert registry.get_latest_version(f"{topic}-value").schema_id == codec.schema_id(topic)
        assert _as_written(deserializer(data, _ctx(topic)), topic) == record


@pytest.mark.parametrize("topic", [ACCEPTED, DEADLETTER])
def test_codec_decodes_avro_serializer_output(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_accepted: Callable[..., dict[str, Any]],
    make_dead_letter: Callable[..., dict[str, Any]],
    topic: str,
) -> None:
    serializer = _serializer(registry, topic_schemas[topic])
    reader = AvroCodec(topic_schemas, registry=registry, register=False)
    for record in _samples(topic, make_accepted, make_dead_letter):
        assert _as_written(reader.decode(serializer(record, _ctx(topic))), topic) == record


# --- byte-identical to AvroSerializer -----------------------------------------------------


@pytest.mark.parametrize("topic", [ACCEPTED, DEADLETTER])
def test_auto_register_bytes_identical_to_avro_serializer(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_accepted: Callable[..., dict[str, Any]],
    make_dead_letter: Callable[..., dict[str, Any]],
    topic: str,
) -> None:
    _prefill(registry)
    codec = AvroCodec(topic_schemas, registry=registry, auto_register=True)
    serializer = _serializer(registry, topic_schemas[topic], **{"auto.register.schemas": True})
    for record in _samples(topic, make_accepted, make_dead_letter):
        assert codec.encode(topic, record) == serializer(record, _ctx(topic))
    assert registry.get_versions(f"{topic}-value") == [1]  # the serializer found ours, registered nothing


@pytest.mark.parametrize("topic", [ACCEPTED, DEADLETTER])
def test_registered_schema_used_without_auto_register(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_accepted: Callable[..., dict[str, Any]],
    make_dead_letter: Callable[..., dict[str, Any]],
    topic: str,
) -> None:
    _prefill(registry)
    subjects = {t: f"{t}-value" for t in topic_schemas}
    # Pre-populated as a deployment pipeline would (AvroSerializer registers the text stripped).
    ids = {t: registry.register_schema(s, Schema(topic_schemas[t].text.strip(), "AVRO")) for t, s in subjects.items()}
    assert ids[topic] > 1
    codec = AvroCodec(topic_schemas, registry=registry)  # auto_register=False: the production default
    assert codec.schema_id(topic) == ids[topic]
    serializer = _serializer(registry, topic_schemas[topic], **{"auto.register.schemas": False})
    for record in _samples(topic, make_accepted, make_dead_letter):
        data = codec.encode(topic, record)
        assert int.from_bytes(data[1:5], "big") == ids[topic]
        assert data == serializer(record, _ctx(topic))
    assert sorted(registry.get_versions(subjects[topic])) == [1]


def test_registered_schema_with_other_whitespace_is_found(
    registry: SchemaRegistryClient, topic_schemas: dict[str, AvroSchema], make_accepted: Callable[..., dict[str, Any]]
) -> None:
    # Another tool registered the same schema as compact JSON: the mock's exact-text lookup
    # misses it (a real registry would not), the latest-version check accepts it.
    for topic, schema in topic_schemas.items():
        registry.register_schema(f"{topic}-value", Schema(json.dumps(json.loads(schema.text)), "AVRO"))
    codec = AvroCodec(topic_schemas, registry=registry)
    latest = registry.get_latest_version(f"{ACCEPTED}-value")
    assert codec.schema_id(ACCEPTED) == latest.schema_id
    assert codec.encode(ACCEPTED, make_accepted())[5:] == AvroCodec(topic_schemas).encode(ACCEPTED, make_accepted())[10:]


def test_latest_version_with_more_fields_is_used_like_use_latest_version(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    make_accepted: Callable[..., dict[str, Any]],
    make_dead_letter: Callable[..., dict[str, Any]],
) -> None:
    ours = topic_schemas[ACCEPTED]

    def newer(doc: dict[str, Any]) -> None:  # a later release: one field more (with default), docs gone
        doc.pop("doc", None)
        for f in doc["fields"]:
            f.pop("doc", None)
        doc["fields"].insert(3, {"name": "ward", "type": ["null", "string"], "default": None})

    newer_text = _variant(ours, newer)
    latest_id = registry.register_schema(f"{ACCEPTED}-value", Schema(newer_text, "AVRO"))
    registry.register_schema(f"{DEADLETTER}-value", Schema(topic_schemas[DEADLETTER].text.strip(), "AVRO"))
    codec = AvroCodec(topic_schemas, registry=registry)
    assert codec.schema_id(ACCEPTED) == latest_id
    assert codec.writer_schema(ACCEPTED).field_names[3] == "ward"
    # Avro's own checker agrees: each side reads what the other writes.
    for reader, writer in ((newer_text, ours.text), (ours.text, newer_text)):
        result = ReaderWriterCompatibilityChecker().get_compatibility(avro.schema.parse(reader), avro.schema.parse(writer))
        assert result.compatibility is SchemaCompatibilityType.compatible
    serializer = _serializer(
        registry, ours, **{"auto.register.schemas": False, "use.latest.version": True}
    )
    for record in _samples(ACCEPTED, make_accepted, make_dead_letter):
        data = codec.encode(ACCEPTED, record)
        assert data == serializer(record, _ctx(ACCEPTED))
        decoded = codec.decode(data)  # resolved to our schema: the extra field is dropped
        assert _as_written(decoded, ACCEPTED) == record


# --- auto-register off: nothing compatible in the subject -> ConfigError ---------------------


def test_empty_subject_without_auto_register_is_a_config_error(
    registry: SchemaRegistryClient, topic_schemas: dict[str, AvroSchema]
) -> None:
    with pytest.raises(ConfigError) as caught:
        AvroCodec(topic_schemas, registry=registry)
    message = str(caught.value)
    assert message.startswith(
        "schema registry subject hl7.accepted-value holds no schema compatible with com.pkb.hl7gateway.AcceptedMessage"
    )
    assert "(it is empty)" in message and "HL7_SCHEMA_REGISTRY_AUTO_REGISTER" in message and "\n" not in message
    assert registry.get_subjects() == []  # nothing registered


def _drop_field(doc: dict[str, Any]) -> None:
    doc["fields"] = [f for f in doc["fields"] if f["name"] != "source_offset"]


def _retype_field(doc: dict[str, Any]) -> None:
    _field(doc, "source_offset")["type"] = "string"


def _drop_logical_type(doc: dict[str, Any]) -> None:
    _field(doc, "received_at")["type"] = "long"


def _required_extra_field(doc: dict[str, Any]) -> None:
    doc["fields"].append({"name": "ward", "type": "string"})


def _renamed_record(doc: dict[str, Any]) -> None:
    doc["name"] = "AcceptedMessageV2"


def _enum_symbols_reordered(doc: dict[str, Any]) -> None:
    _field(doc, "principal_type")["type"]["symbols"].reverse()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_drop_field, "source_offset missing"),
        (_retype_field, "source_offset has another type"),
        (_drop_logical_type, "received_at has another type"),
        (_required_extra_field, "ward has no default"),
        (_renamed_record, "record com.pkb.hl7gateway.AcceptedMessageV2"),
        (_enum_symbols_reordered, "principal_type has another type"),
    ],
)
def test_incompatible_subject_without_auto_register_is_a_config_error(
    registry: SchemaRegistryClient,
    topic_schemas: dict[str, AvroSchema],
    change: Callable[[dict[str, Any]], None],
    named: str,
) -> None:
    registry.register_schema(f"{ACCEPTED}-value", Schema(_variant(topic_schemas[ACCEPTED], change), "AVRO"))
    with pytest.raises(ConfigError) as caught:
        AvroCodec(topic_schemas, registry=registry)
    message = str(caught.value)
    assert "subject hl7.accepted-value holds no schema compatible with com.pkb.hl7gateway.AcceptedMessage" in message
    assert f"latest version 1: {named}" in message


def test_older_release_in_subject_names_the_fields_it_lacks(
    registry: SchemaRegistryClient, topic_schemas: dict[str, AvroSchema]
) -> None:
    later = ("message_structure", "message_datetime", "processing_id", "character_set")

    def older(doc: dict[str, Any]) -> None:
        doc["fields"] = [f for f in doc["fields"] if f["name"] not in later]

    registry.register_schema(f"{ACCEPTED}-value", Schema(_variant(topic_schemas[ACCEPTED], older), "AVRO"))
    with pytest.raises(ConfigError) as caught:
        AvroCodec(topic_schemas, registry=registry)
    assert (
        "(latest version 1: message_structure missing, message_datetime missing, processing_id missing, +1 more)"
        in str(caught.value)
    )


def test_registry_failure_is_a_config_error_without_the_url(topic_schemas: dict[str, AvroSchema]) -> None:
    class Down:
        def lookup_schema(self, subject: str, schema: Any, normalize_schemas: bool = False) -> Any:
            raise SchemaRegistryError(503, 50301, "unavailable at https://user:secret@registry.example")

    with pytest.raises(SchemaRegistryUnavailable) as caught:
        AvroCodec(topic_schemas, registry=Down())  # type: ignore[arg-type]
    assert isinstance(caught.value, ConfigError)
    assert "hl7.accepted-value" in str(caught.value) and "503" in str(caught.value)
    assert "secret" not in str(caught.value)


@needs_mock
def test_cli_prints_the_registry_error_as_one_line(topic_schemas: dict[str, AvroSchema]) -> None:
    from processor.cli import command_failure

    try:
        AvroCodec(topic_schemas, registry=SchemaRegistryClient.new_client({"url": "mock://cli"}))
    except ConfigError as exc:
        status, line, expected = command_failure(exc)
    assert (status, expected) == (2, True) and "\n" not in line
    assert line.startswith("schema registry subject hl7.accepted-value holds no schema")


# --- compatibility levels ------------------------------------------------------------------


@needs_mock
def test_auto_register_sets_the_level_of_a_subject_without_one(topic_schemas: dict[str, AvroSchema]) -> None:
    registry = levels_registry(global_level="BACKWARD", subject_levels={f"{DEADLETTER}-value": "FULL"})
    AvroCodec(topic_schemas, registry=registry, auto_register=True)
    assert registry.subject_levels == {f"{ACCEPTED}-value": AUTO_REGISTER_COMPATIBILITY, f"{DEADLETTER}-value": "FULL"}
    assert registry.global_level == "BACKWARD"


@needs_mock
def test_level_none_is_a_warning(topic_schemas: dict[str, AvroSchema], caplog: pytest.LogCaptureFixture) -> None:
    registry = levels_registry(global_level="NONE")
    for topic, schema in topic_schemas.items():
        registry.register_schema(f"{topic}-value", Schema(schema.text.strip(), "AVRO"))
    with caplog.at_level(logging.WARNING, logger="processor.avro.codec"):
        codec = AvroCodec(topic_schemas, registry=registry)
    assert codec.schema_id(ACCEPTED) is not None
    warned = [r.getMessage() for r in caplog.records if "compatibility level NONE" in r.getMessage()]
    assert len(warned) == 2 and "hl7.accepted-value" in warned[0]
    assert registry.subject_levels == {}  # auto-register off: levels are only read


@needs_mock
def test_unreadable_level_is_only_a_warning(
    topic_schemas: dict[str, AvroSchema], caplog: pytest.LogCaptureFixture
) -> None:
    registry = levels_registry(refuse=True)
    with caplog.at_level(logging.WARNING, logger="processor.avro.codec"):
        codec = AvroCodec(topic_schemas, registry=registry, auto_register=True)
    assert codec.schema_id(DEADLETTER) is not None
    assert any("cannot read or set its compatibility level" in r.getMessage() for r in caplog.records)


def test_plain_mock_registry_is_not_asked_for_levels(
    registry: SchemaRegistryClient, topic_schemas: dict[str, AvroSchema], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mock inherits the REST calls, which fail only after the client's retries (seconds).
    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("REST call on the mock registry")

    monkeypatch.setattr(SchemaRegistryClient, "get_compatibility", forbidden)
    monkeypatch.setattr(SchemaRegistryClient, "set_compatibility", forbidden)
    AvroCodec(topic_schemas, registry=registry, auto_register=True)


# --- settings: auto-register flag and HL7_SCHEMA_REGISTRY_* pass-through ------------------------


def test_auto_register_setting_defaults_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HL7_SCHEMA_REGISTRY_AUTO_REGISTER", raising=False)
    assert load_settings().schema_registry_auto_register is False
    monkeypatch.setenv("HL7_SCHEMA_REGISTRY_AUTO_REGISTER", "true")
    assert load_settings().schema_registry_auto_register is True


@needs_mock
def test_from_settings_honours_auto_register(topic_schemas: dict[str, AvroSchema], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HL7_SCHEMA_REGISTRY_AUTO_REGISTER", raising=False)
    with pytest.raises(ConfigError, match="holds no schema compatible"):
        AvroCodec.from_settings(load_settings(schema_registry_url="mock://from-settings-off"))
    codec = AvroCodec.from_settings(
        load_settings(schema_registry_url="mock://from-settings-on", schema_registry_auto_register=True)
    )
    assert codec.wire_format == "confluent" and codec.schema_id("hl7.accepted") is not None


def test_passthrough_maps_names_and_skips_the_gateways_own() -> None:
    env = {
        "HL7_SCHEMA_REGISTRY_URL": "https://registry.example:8081",
        "HL7_SCHEMA_REGISTRY_AUTO_REGISTER": "true",
        "HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "key:secret",
        "hl7_schema_registry_ssl_ca_location": "/etc/ssl/ca.pem",
        "HL7_SCHEMA_REGISTRY_MAX_RETRIES": "5",
        "HL7_SCHEMA_REGISTRY_": "ignored",
        "HL7_KAFKA_SASL_MECHANISM": "PLAIN",
        "OTHER": "x",
    }
    assert schema_registry_passthrough(env) == {
        "basic.auth.user.info": "key:secret",
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "max.retries": "5",
    }


def test_passthrough_reads_the_environment_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL7_SCHEMA_REGISTRY_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    assert load_settings().schema_registry_extra["ssl.ca.location"] == "/etc/ssl/ca.pem"


def _with_passthrough(settings: Settings, env: dict[str, str]) -> Settings:
    return settings.model_copy(update={"schema_registry_extra": schema_registry_passthrough(env)})


def test_passthrough_reaches_the_client_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "HL7_SCHEMA_REGISTRY_URL": "https://ignored.example",
        "HL7_SCHEMA_REGISTRY_URL_EXTRA": "not the url",
        "HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "key:secret",
        "HL7_SCHEMA_REGISTRY_SSL_CA_LOCATION": certifi.where(),
        "HL7_SCHEMA_REGISTRY_TIMEOUT": "2.5",
        "HL7_SCHEMA_REGISTRY_CACHE_CAPACITY": "50",
    }
    monkeypatch.chdir(tmp_path)  # no .env file
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(schema_registry_url="https://registry.example:8081")
    conf = registry_client_config(settings)
    assert conf == {
        "url.extra": "not the url",
        "basic.auth.user.info": "key:secret",
        "ssl.ca.location": certifi.where(),
        "timeout": 2.5,
        "cache.capacity": 50,
        "url": "https://registry.example:8081",
    }
    del env["HL7_SCHEMA_REGISTRY_URL_EXTRA"]
    seen: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, conf: dict[str, Any]) -> None:
            seen.append(conf)

    settings = _with_passthrough(settings, env)
    monkeypatch.setattr("confluent_kafka.schema_registry.SchemaRegistryClient", Recording)
    registry_client(settings)
    assert seen == [registry_client_config(settings)]
    monkeypatch.undo()
    # The real client takes them (timeout and cache.capacity exist from confluent-kafka 2.7).
    known = {k: v for k, v in env.items() if "TIMEOUT" not in k and "CACHE" not in k}
    assert isinstance(registry_client(_with_passthrough(settings, known)), SchemaRegistryClient)


def test_refused_client_settings_are_a_config_error_without_secrets() -> None:
    settings = load_settings(schema_registry_url="https://user:pw-in-url@registry.example")
    with pytest.raises(ConfigError) as caught:
        registry_client(_with_passthrough(settings, {"HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "key:secret-value"}))
    assert "secret-value" not in str(caught.value) and "pw-in-url" not in str(caught.value)
    plain = load_settings(schema_registry_url="https://registry.example")
    with pytest.raises(ConfigError, match="no.such.key"):
        registry_client(_with_passthrough(plain, {"HL7_SCHEMA_REGISTRY_NO_SUCH_KEY": "1"}))
    with pytest.raises(ConfigError, match="max.retries"):
        registry_client(_with_passthrough(plain, {"HL7_SCHEMA_REGISTRY_MAX_RETRIES": "many"}))
