"""Settings and librdkafka pass-through: environment and ``.env`` file alike, read once."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.config import Settings, kafka_passthrough, load_settings, require
from processor.errors import ConfigError
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


# --------------------------------------------------------------- read once, into Settings


def _no_hl7_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.upper().startswith("HL7_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_passthrough_is_read_once_when_settings_are_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_hl7_environment(monkeypatch, tmp_path)
    (tmp_path / ".env").write_text("HL7_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n")
    monkeypatch.setenv("HL7_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("HL7_SCHEMA_REGISTRY_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    settings = load_settings(kafka_bootstrap_servers="b:9092")
    before = producer_config(settings)

    # The environment and the .env file change afterwards: the built object does not.
    monkeypatch.setenv("HL7_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("HL7_KAFKA_SASL_USERNAME", "someone")
    monkeypatch.delenv("HL7_SCHEMA_REGISTRY_SSL_CA_LOCATION")
    (tmp_path / ".env").write_text("HL7_KAFKA_SECURITY_PROTOCOL=PLAINTEXT\n")

    assert settings.kafka_extra == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}
    assert settings.schema_registry_extra == {"ssl.ca.location": "/etc/ssl/ca.pem"}
    after = producer_config(settings)
    before.pop("logger"), after.pop("logger")  # a new adapter object per call
    assert after == before and "sasl.username" not in after
    # A Settings built now sees the change.
    assert load_settings().kafka_extra["sasl.mechanism"] == "SCRAM-SHA-512"


def test_passthrough_skips_the_gateways_own_settings_and_empty_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_hl7_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "b:9092")
    monkeypatch.setenv("HL7_KAFKA_EXTRA", "not JSON, and not a librdkafka setting")
    monkeypatch.setenv("HL7_KAFKA_SASL_PASSWORD", "")  # empty = unset, as for every setting
    monkeypatch.setenv("HL7_KAFKA_CLIENT_RACK", "az-1")
    monkeypatch.setenv("HL7_SCHEMA_REGISTRY_URL", "https://registry.example")
    monkeypatch.setenv("HL7_SCHEMA_REGISTRY_AUTO_REGISTER", "true")
    settings = load_settings()
    assert settings.kafka_extra == {"client.rack": "az-1"}
    assert settings.schema_registry_extra == {}
    assert (
        settings.schema_registry_url == "https://registry.example" and settings.schema_registry_auto_register
    )


def test_explicit_passthrough_replaces_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_hl7_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("HL7_KAFKA_SASL_MECHANISM", "PLAIN")
    settings = load_settings(kafka_bootstrap_servers="b:9092", kafka_extra={"linger.ms": "7"})
    assert settings.kafka_extra == {"linger.ms": "7"}
    assert producer_config(settings)["linger.ms"] == "7" and "sasl.mechanism" not in producer_config(settings)


def test_no_env_file_means_no_passthrough_from_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_hl7_environment(monkeypatch, tmp_path)
    (tmp_path / ".env").write_text("HL7_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n")
    assert Settings(_env_file=None).kafka_extra == {}  # type: ignore[call-arg]
    assert Settings().kafka_extra == {"security.protocol": "SASL_SSL"}


def test_former_outside_variables_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_hl7_environment(monkeypatch, tmp_path)
    defaults = load_settings()
    assert (defaults.schemas_dir, defaults.local_kafka_cache) == (None, None)
    assert defaults.maven_repository == "https://repo1.maven.org/maven2"
    assert defaults.local_kafka_log_level == "WARN"
    monkeypatch.setenv("HL7_SCHEMAS_DIR", str(tmp_path / "schemas"))
    monkeypatch.setenv("HL7_LOCAL_KAFKA_CACHE", str(tmp_path / "jars"))
    monkeypatch.setenv("HL7_MAVEN_REPOSITORY", "https://mirror.example/maven2")
    monkeypatch.setenv("HL7_LOCAL_KAFKA_LOG_LEVEL", "INFO")
    settings = load_settings()
    assert settings.schemas_dir == tmp_path / "schemas" and settings.local_kafka_cache == tmp_path / "jars"
    assert (settings.maven_repository, settings.local_kafka_log_level) == (
        "https://mirror.example/maven2",
        "INFO",
    )


def test_local_kafka_takes_its_settings_as_arguments_or_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processor.kafka.broker_jars import _locked_artifacts, cache_dir
    from processor.kafka.local_broker import LocalKafka

    _no_hl7_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("HL7_MAVEN_REPOSITORY", "https://mirror.example/maven2")
    monkeypatch.setenv("HL7_LOCAL_KAFKA_CACHE", str(tmp_path / "jars"))
    given = LocalKafka(
        data_dir=tmp_path / "a",
        jar_cache=tmp_path / "mine",
        maven_repository="https://m.example/",
        log_level="INFO",
    )
    assert (given._jar_cache, given._maven_repository, given._log_level) == (
        tmp_path / "mine",
        "https://m.example/",
        "INFO",
    )
    defaulted = LocalKafka(data_dir=tmp_path / "b")
    assert (defaulted._jar_cache, defaulted._maven_repository, defaulted._log_level) == (
        tmp_path / "jars",
        "https://mirror.example/maven2",
        "WARN",
    )
    built = LocalKafka.from_settings(Settings(local_kafka_log_level="ERROR"), data_dir=tmp_path / "c")
    assert (built._jar_cache, built._maven_repository, built._log_level) == (
        tmp_path / "jars",
        "https://mirror.example/maven2",
        "ERROR",
    )
    assert cache_dir(tmp_path / "jars") == tmp_path / "jars"
    artifact = _locked_artifacts()[0]
    assert artifact.url("https://m.example/") == (
        f"https://m.example/{artifact.group.replace('.', '/')}/{artifact.artifact}/{artifact.version}/"
        f"{artifact.filename}"
    )


def test_require_names_every_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_hl7_environment(monkeypatch, tmp_path)
    settings = load_settings()
    require(settings, "topic_raw")  # set (a default): nothing to say
    with pytest.raises(ConfigError, match=r"^HL7_KAFKA_BOOTSTRAP_SERVERS is not set$"):
        require(settings, "kafka_bootstrap_servers")
    with pytest.raises(ConfigError) as caught:
        require(settings, "registry_file", "kafka_bootstrap_servers")
    assert str(caught.value) == "HL7_REGISTRY_FILE and HL7_KAFKA_BOOTSTRAP_SERVERS are not set"
    assert caught.value.exit_status == 2
