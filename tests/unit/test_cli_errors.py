"""Configuration mistakes end a command with one clear line and exit 2, never a traceback."""

from __future__ import annotations

import pytest

from processor.cli import main


def test_invalid_setting_names_the_variable_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL7_METRICS_PORT", "not-a-port")
    assert main(["stream"]) == 2
    err = capsys.readouterr().err
    assert "HL7_METRICS_PORT" in err and "integer" in err
    assert "Traceback" not in err and "not-a-port" not in err  # the rule, never the value


def test_missing_kafka_setting_for_replay_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HL7_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir("/")  # no .env file
    assert main(["deadletter", "replay", "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "hl7-processor: HL7_KAFKA_BOOTSTRAP_SERVERS is not set"
