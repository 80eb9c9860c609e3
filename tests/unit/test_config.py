"""Settings and librdkafka pass-through: environment and ``.env`` file alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.config import kafka_passthrough, load_settings
from processor.kafka.client_config import consumer_config, producer_config


def test_passthrough_maps_names_and_skips_bootstrap() -> None:
    env = {
        "HL7_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "HL7_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HL7_KAFKA_BOOTSTRAP_SERVERS": "b:9092",
        "HL7_EDGE_PORT": "9999",
    }
    assert kafka_passthrough(env) == {"sasl.mechanism": "SCRAM-SHA-512", "security.protocol": "SASL_SSL"}


def test_dotenv_file_feeds_settings_and_passthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("HL7_"):
            monkeypatch.delenv(name)
    (tmp_path / ".env").write_text(
        "HL7_KAFKA_BOOTSTRAP_SERVERS=broker:9093\n"
        "HL7_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n"
        "HL7_KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n"
        "HL7_EDGE_PORT=9999\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HL7_KAFKA_SASL_MECHANISM", "PLAIN")  # the real environment wins
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "broker:9093" and settings.edge_port == 9999
    conf = producer_config(settings)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "PLAIN"


def test_gateway_guarantees_cannot_be_switched_off_by_passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL7_KAFKA_ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("HL7_KAFKA_ACKS", "1")
    monkeypatch.setenv("HL7_KAFKA_ISOLATION_LEVEL", "read_uncommitted")
    monkeypatch.setenv("HL7_KAFKA_ENABLE_AUTO_COMMIT", "true")
    settings = load_settings(kafka_bootstrap_servers="b:9092")
    producer = producer_config(settings)
    consumer = consumer_config(settings)
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert consumer["isolation.level"] == "read_committed" and consumer["enable.auto.commit"] is False


def test_empty_variable_means_not_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HL7_REGISTRY_FILE", "")
    monkeypatch.setenv("HL7_EDGE_PORT", "")
    settings = load_settings()
    assert settings.registry_file is None  # not Path("."), which would read as "'.' unreadable"
    assert settings.edge_port == type(settings).model_fields["edge_port"].default
