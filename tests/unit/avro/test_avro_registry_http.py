"""The codec against a schema registry over HTTP, through the real ``SchemaRegistryClient``.

A small in-memory server speaks the part of Confluent Schema Registry's REST API the codec
and AvroSerializer use (register, look up, latest version, schema by id, compatibility
config). Unlike the ``mock://`` client these tests run on every confluent-kafka version the
gateway supports (the mock exists from 2.7), and they see what reaches the wire: the
``Authorization`` header from ``HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO``, the ``PUT
/config`` of the compatibility level, the requests auto-register off does not make.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from processor.avro.codec import AUTO_REGISTER_COMPATIBILITY, AvroCodec, SchemaRegistryUnavailable
from processor.config import load_settings
from processor.errors import ConfigError

ACCEPTED = "hl7.accepted"
DEADLETTER = "hl7.deadletter"
_BEFORE_2_7 = not hasattr(SchemaRegistryClient, "new_client")  # confluent-kafka < 2.7


def _same(text: str) -> str:
    """Schema identity as the registry sees it: the JSON, whitespace aside."""
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


class FakeRegistry:
    """Confluent Schema Registry's REST API, the parts used here, in memory (one id per
    distinct schema across subjects, versions from 1, levels per subject or global)."""

    def __init__(self, global_level: str = "BACKWARD") -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.levels: dict[str, str] = {}
        self.global_level = global_level
        self.fail_with: int | None = None
        self.requests: list[tuple[str, str]] = []
        self.authorizations: set[str | None] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                path = unquote(urlsplit(self.path).path).strip("/").split("/")
                fake.requests.append((self.command, "/".join(path)))
                fake.authorizations.add(self.headers.get("Authorization"))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                if fake.fail_with is not None:
                    self._answer(fake.fail_with, {"error_code": fake.fail_with * 100 + 1, "message": "broken"})
                    return
                self._answer(*fake.route(self.command, path, body))

            do_GET = do_POST = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def register(self, subject: str, text: str) -> int:
        for schema_id, known in self.schemas.items():
            if _same(known) == _same(text):
                break
        else:
            schema_id = len(self.schemas) + 1
            self.schemas[schema_id] = text
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def _version(self, subject: str, index: int) -> dict[str, Any]:
        schema_id = self.subjects[subject][index]
        version = index + 1 if index >= 0 else len(self.subjects[subject])
        return {"subject": subject, "id": schema_id, "version": version, "schema": self.schemas[schema_id]}

    def route(self, method: str, path: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        if path == ["config"] and method == "GET":
            return 200, {"compatibilityLevel": self.global_level}
        if len(path) == 2 and path[0] == "config":
            if method == "PUT":
                self.levels[path[1]] = body["compatibility"]
                return 200, {"compatibility": body["compatibility"]}
            if path[1] in self.levels:
                return 200, {"compatibilityLevel": self.levels[path[1]]}
            return 404, {"error_code": 40408, "message": "Subject does not have subject-level compatibility configured"}
        if len(path) == 3 and path[:2] == ["schemas", "ids"]:
            schema_id = int(path[2])
            if schema_id in self.schemas:
                return 200, {"schema": self.schemas[schema_id]}
            return 404, {"error_code": 40403, "message": "Schema not found"}
        if path[0] != "subjects" or len(path) < 2:
            return 404, {"error_code": 404, "message": "not here"}
        subject = path[1]
        if len(path) == 3 and path[2] == "versions" and method == "POST":
            return 200, {"id": self.register(subject, body["schema"])}
        if subject not in self.subjects:
            return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
        if len(path) == 2 and method == "POST":  # look up a schema in the subject
            for index, schema_id in enumerate(self.subjects[subject]):
                if _same(self.schemas[schema_id]) == _same(body["schema"]):
                    return 200, self._version(subject, index)
            return 404, {"error_code": 40403, "message": "Schema not found"}
        if path[2:] == ["versions", "latest"] and method == "GET":
            return 200, self._version(subject, -1)
        return 404, {"error_code": 404, "message": "not here"}


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HL7_SCHEMA_REGISTRY_URL", "HL7_SCHEMA_REGISTRY_AUTO_REGISTER", "HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"):
        monkeypatch.delenv(name, raising=False)
    if not _BEFORE_2_7:  # max.retries came with 2.7 (where it is refused unless timeout is set too)
        monkeypatch.setenv("HL7_SCHEMA_REGISTRY_MAX_RETRIES", "0")  # a failing request fails at once
        monkeypatch.setenv("HL7_SCHEMA_REGISTRY_TIMEOUT", "10")


def _codec(fake: FakeRegistry, **settings: Any) -> AvroCodec:
    return AvroCodec.from_settings(load_settings(schema_registry_url=fake.url, **settings))


def _ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def test_auto_register_sets_level_registers_and_sends_basic_auth(
    fake: FakeRegistry, monkeypatch: pytest.MonkeyPatch, make_accepted: Callable[..., dict[str, Any]]
) -> None:
    monkeypatch.setenv("HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "api-key:api-secret")
    codec = _codec(fake, schema_registry_auto_register=True)
    assert fake.levels == {f"{ACCEPTED}-value": AUTO_REGISTER_COMPATIBILITY, f"{DEADLETTER}-value": AUTO_REGISTER_COMPATIBILITY}
    assert set(fake.subjects) == {f"{ACCEPTED}-value", f"{DEADLETTER}-value"}
    assert fake.authorizations == {"Basic " + base64.b64encode(b"api-key:api-secret").decode()}
    data = codec.encode(ACCEPTED, make_accepted())
    assert int.from_bytes(data[1:5], "big") == fake.subjects[f"{ACCEPTED}-value"][0]
    # A restart finds its schemas (same ids) and keeps an operator's level.
    fake.levels[f"{ACCEPTED}-value"] = "BACKWARD"
    again = _codec(fake, schema_registry_auto_register=True)
    assert again.schema_id(ACCEPTED) == codec.schema_id(ACCEPTED)
    assert fake.levels[f"{ACCEPTED}-value"] == "BACKWARD"


def test_without_auto_register_only_reads(
    fake: FakeRegistry, topic_schemas: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    ids = {t: fake.register(f"{t}-value", s.text) for t, s in topic_schemas.items()}
    fake.global_level = "NONE"
    fake.requests.clear()
    with caplog.at_level(logging.WARNING, logger="processor.avro.codec"):
        codec = _codec(fake)
    assert {t: codec.schema_id(t) for t in topic_schemas} == ids
    assert all(method != "PUT" and not path.endswith("/versions") for method, path in fake.requests)
    assert sum("compatibility level NONE" in r.getMessage() for r in caplog.records) == 2


def test_empty_subject_without_auto_register_is_a_config_error(fake: FakeRegistry) -> None:
    with pytest.raises(ConfigError, match="^schema registry subject hl7.accepted-value holds no schema compatible with "):
        _codec(fake)
    assert fake.subjects == {}


def test_registry_error_is_a_config_error_without_the_password(fake: FakeRegistry) -> None:
    fake.fail_with = 500
    url = fake.url.replace("http://", "http://user:hunter2@")
    with pytest.raises(SchemaRegistryUnavailable) as caught:
        AvroCodec.from_settings(load_settings(schema_registry_url=url))
    assert "hl7.accepted-value" in str(caught.value) and "500" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "mode",
    [
        "auto-register",
        "lookup",
        pytest.param(
            "latest",
            marks=pytest.mark.skipif(
                _BEFORE_2_7,
                reason="AvroSerializer before 2.7 writes use.latest.version values with its own schema "
                "behind the latest version's id (a body the id does not describe)",
            ),
        ),
    ],
)
def test_bytes_identical_to_avro_serializer_over_http(
    fake: FakeRegistry,
    topic_schemas: dict[str, Any],
    make_accepted: Callable[..., dict[str, Any]],
    mode: str,
) -> None:
    ours = topic_schemas[ACCEPTED]
    conf: dict[str, Any] = {"subject.name.strategy": topic_subject_name_strategy}
    fake.register(f"{DEADLETTER}-value", topic_schemas[DEADLETTER].text)
    if mode == "auto-register":
        codec = _codec(fake, schema_registry_auto_register=True)
        conf["auto.register.schemas"] = True
    elif mode == "lookup":
        fake.register(f"{ACCEPTED}-value", ours.text)
        codec = _codec(fake)
        conf["auto.register.schemas"] = False
    else:  # the subject holds a later version (one more field, with a default), not ours
        doc = json.loads(ours.text)
        doc["fields"].append({"name": "ward", "type": ["null", "string"], "default": None})
        fake.register(f"{ACCEPTED}-value", json.dumps(doc))
        codec = _codec(fake)
        conf.update({"auto.register.schemas": False, "use.latest.version": True})
    client = SchemaRegistryClient({"url": fake.url})
    serializer = AvroSerializer(client, ours.text, conf=conf)
    deserializer = AvroDeserializer(client)
    for record in (make_accepted(), make_accepted(trigger_event=None, payload=b"\x00" * 300)):
        data = codec.encode(ACCEPTED, record)
        assert data == serializer(record, _ctx(ACCEPTED))
        decoded = deserializer(data, _ctx(ACCEPTED))
        assert decoded["ingest_id"] == record["ingest_id"] and decoded["payload"] == record["payload"]
        if mode == "latest":
            assert decoded["ward"] is None
    assert fake.subjects[f"{ACCEPTED}-value"] == [codec.schema_id(ACCEPTED)]
