"""Topic definitions: per-topic retention, min.insync.replicas, the compacted ledger, errors."""

from __future__ import annotations

import pytest

from processor.cli import main
from processor.config import Settings
from processor.errors import ConfigError
from processor.kafka.client_config import message_max_bytes
from processor.kafka.topics import (
    Drift,
    ledger_spec,
    ledger_topic,
    min_insync_replicas,
    topic_configs,
    topic_specs,
)

DAY_MS = 24 * 3600 * 1000


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap_servers="127.0.0.1:1", **overrides)  # type: ignore[arg-type]


def test_each_topic_gets_its_own_retention_and_the_ledger_is_compacted() -> None:
    settings = _settings()
    specs = {spec.name: spec for spec in topic_specs(settings)}
    assert list(specs) == ["hl7.raw", "hl7.accepted", "hl7.deadletter", "hl7.deadletter.replayed", "hl7.raw.dedupe"]
    assert specs["hl7.raw"].config["retention.ms"] == str(90 * DAY_MS)
    assert specs["hl7.accepted"].config["retention.ms"] == str(30 * DAY_MS)
    assert specs["hl7.deadletter"].config["retention.ms"] == str(90 * DAY_MS)
    for name in ("hl7.raw", "hl7.accepted", "hl7.deadletter"):
        assert specs[name].config["cleanup.policy"] == "delete"
        assert specs[name].config["max.message.bytes"] == str(message_max_bytes(settings))
        assert specs[name].partitions == 6 and specs[name].replication_factor == -1
    ledger = specs["hl7.deadletter.replayed"]
    assert dict(ledger.config) == {"cleanup.policy": "compact"}
    assert ledger.partitions == 1 and ledger.replication_factor == -1
    dedupe = specs["hl7.raw.dedupe"]
    assert dict(dedupe.config) == {
        "cleanup.policy": "compact,delete", "retention.ms": str(8 * DAY_MS), "segment.ms": str(DAY_MS),
    }
    assert dedupe.partitions == 6


def test_dedupe_changelog_follows_the_raw_partitions_and_the_window() -> None:
    settings = _settings(topic_dedupe="state", dedupe_window="2h", topic_replication_factor=3)
    spec = {s.name: s for s in topic_specs(settings, partitions=12)}["state"]
    assert spec.partitions == 12 and spec.replication_factor == 3
    assert spec.config["retention.ms"] == str(2 * 3600 * 1000 + DAY_MS)
    assert spec.config["segment.ms"] == str(2 * 3600 * 1000)
    assert spec.config["min.insync.replicas"] == "2"


def test_retention_follows_the_settings() -> None:
    settings = _settings(topic_raw_retention_ms=-1, topic_accepted_retention_ms=DAY_MS,
                         topic_deadletter_retention_ms=7 * DAY_MS)
    configs = {spec.name: spec.config for spec in topic_specs(settings)}
    assert configs["hl7.raw"]["retention.ms"] == "-1"
    assert configs["hl7.accepted"]["retention.ms"] == str(DAY_MS)
    assert configs["hl7.deadletter"]["retention.ms"] == str(7 * DAY_MS)
    assert topic_configs(settings, "hl7.accepted")["retention.ms"] == str(DAY_MS)
    assert topic_configs(settings)["retention.ms"] == "-1"  # default: the raw topic's


@pytest.mark.parametrize(
    ("factor", "setting", "expected"),
    [(-1, None, None), (1, None, 1), (2, None, 1), (3, None, 2), (5, None, 2), (3, 3, 3), (-1, 2, 2)],
)
def test_min_insync_replicas(factor: int, setting: int | None, expected: int | None) -> None:
    settings = _settings(topic_replication_factor=factor, topic_min_insync_replicas=setting)
    assert min_insync_replicas(settings) == expected
    for spec in topic_specs(settings):
        assert spec.config.get("min.insync.replicas") == (None if expected is None else str(expected))


def test_command_line_factor_overrides_the_setting() -> None:
    settings = _settings(topic_replication_factor=1)
    specs = topic_specs(settings, partitions=12, replication_factor=3)
    assert {(s.partitions, s.replication_factor, s.config["min.insync.replicas"]) for s in specs[:3]} == {(12, 3, "2")}
    assert (specs[3].partitions, specs[3].replication_factor, specs[3].config["min.insync.replicas"]) == (1, 3, "2")
    assert (specs[4].partitions, specs[4].replication_factor, specs[4].config["min.insync.replicas"]) == (12, 3, "2")


def test_ledger_is_the_replays_ledger() -> None:
    from processor.deadletter_replay import ledger_topic as replay_ledger

    settings = _settings(topic_deadletter="dl", topic_replication_factor=3)
    assert ledger_topic(settings) == replay_ledger(settings) == "dl.replayed"
    spec = ledger_spec(settings)
    assert spec.name == "dl.replayed" and spec.config["cleanup.policy"] == "compact"
    new = spec.new_topic()
    assert (new.topic, new.num_partitions, new.replication_factor) == ("dl.replayed", 1, 3)
    assert new.config == {"cleanup.policy": "compact", "min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("overrides", "kwargs", "names"),
    [
        ({"topic_min_insync_replicas": 3, "topic_replication_factor": 2}, {}, "HL7_TOPIC_MIN_INSYNC_REPLICAS"),
        ({"topic_raw_retention_ms": 0}, {}, "HL7_TOPIC_RAW_RETENTION_MS"),
        ({}, {"partitions": 0}, "HL7_TOPIC_PARTITIONS"),
        ({}, {"replication_factor": 0}, "HL7_TOPIC_REPLICATION_FACTOR"),
        ({"topic_accepted": "hl7.raw"}, {}, "different topics"),
        ({"topic_dedupe": "hl7.accepted"}, {}, "HL7_TOPIC_DEDUPE"),
    ],
)
def test_configuration_errors(overrides: dict[str, object], kwargs: dict[str, int], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        topic_specs(_settings(**overrides), **kwargs)


def test_drift_lines() -> None:
    assert str(Drift("hl7.raw", "retention.ms", "1", "2")) == "hl7.raw: retention.ms is 1, expected 2"
    assert str(Drift("hl7.raw", "exists", "no", "yes")) == "hl7.raw: missing (topics create makes it)"


@pytest.mark.parametrize(
    ("variable", "value", "text"),
    [
        ("HL7_TOPIC_RAW_RETENTION_MS", "ninety days", "HL7_TOPIC_RAW_RETENTION_MS"),
        ("HL7_TOPIC_DEADLETTER_RETENTION_MS", "-2", "HL7_TOPIC_DEADLETTER_RETENTION_MS"),
        ("HL7_TOPIC_MIN_INSYNC_REPLICAS", "0", "HL7_TOPIC_MIN_INSYNC_REPLICAS"),
    ],
)
def test_check_exits_2_on_bad_settings_without_asking_kafka(
    variable: str, value: str, text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv(variable, value)
    assert main(["topics", "create", "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and text in err[0] and "Traceback" not in err[0]


def test_check_exits_2_when_min_insync_exceeds_the_factor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("HL7_TOPIC_MIN_INSYNC_REPLICAS", "2")
    assert main(["topics", "create", "--check", "--replication-factor", "1"]) == 2
    assert "HL7_TOPIC_MIN_INSYNC_REPLICAS" in capsys.readouterr().err
