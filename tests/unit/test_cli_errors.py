"""A command that fails ends with one clear line on stderr, never a traceback: exit 2 for
unusable input or configuration, 1 for a failure at run time (processor.cli's boundary)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from processor import cli, errors
from processor.cli import main
from processor.errors import (
    AuthenticatorBusy,
    CommandFailed,
    ConfigError,
    GatewayError,
    InputError,
    KafkaUnavailable,
    RegistryInvalid,
)


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


# ------------------------------------------------------------------ the command line's boundary


def _command_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """Every command's handler raises ``exc`` (the parser still runs)."""

    def handler(_args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "_resolve", lambda _target: handler)


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InputError("explain: unsupported charset 'x'"), 2),
        (RegistryInvalid(["customers[0].alias: must match", "partners[1].id: duplicate"]), 2),
        (ConfigError("HL7_EDGE_TLS_CERTFILE and HL7_EDGE_TLS_KEYFILE must be set together"), 2),
        (KafkaUnavailable("Kafka at b:9092 did not answer within 30 s"), 2),
        (CommandFailed("acls: cannot create the ACLs on Kafka at b:9092: TOPIC_AUTHORIZATION_FAILED"), 1),
        (AuthenticatorBusy("3 credential checks already queued"), 1),
    ],
)
def test_gateway_errors_are_one_line_with_their_exit_status(
    exc: GatewayError, status: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _command_raising(monkeypatch, exc)
    assert main(["explain", "--registry", "r.yaml", "--principal", "p"]) == status
    line = _one_line(capsys)
    assert line == f"hl7-processor: {' '.join(str(exc).split())}"


def test_a_multi_line_error_text_still_makes_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _command_raising(
        monkeypatch, ConfigError("Kafka did not become ready within 90s:\n  [kafka] ERROR x\n  y")
    )
    assert main(["kafka"]) == 2
    assert _one_line(capsys) == "hl7-processor: Kafka did not become ready within 90s: [kafka] ERROR x y"


def test_unexpected_error_is_one_line_naming_its_type_never_its_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _command_raising(monkeypatch, KeyError("PID|1||9999999999"))  # texts may carry data
    assert main(["decode", "hl7.accepted"]) == 1
    line = _one_line(capsys)
    assert line.startswith("hl7-processor: unexpected error: KeyError") and "--log-level DEBUG" in line
    assert "9999999999" not in line


def test_unexpected_error_shows_its_traceback_at_debug_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _command_raising(monkeypatch, ZeroDivisionError("division by zero"))
    assert main(["--log-level", "debug", "decode", "hl7.accepted"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
    assert err.splitlines()[-1] == "hl7-processor: unexpected error: ZeroDivisionError"


def test_a_gateway_error_has_no_traceback_even_at_debug_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _command_raising(monkeypatch, CommandFailed("edge: cannot listen on 127.0.0.1:8080: Address in use"))
    assert main(["--log-level", "DEBUG", "edge"]) == 1
    assert _one_line(capsys) == "hl7-processor: edge: cannot listen on 127.0.0.1:8080: Address in use"


def test_keyboard_interrupt_is_130_and_silent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _command_raising(monkeypatch, KeyboardInterrupt())
    assert main(["edge"]) == 130
    assert capsys.readouterr().err == ""


def test_every_error_class_says_how_the_command_line_ends() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(cls, GatewayError) and cls.exit_status in (1, 2) for cls in classes)
    assert {cls.__name__ for cls in classes if cls.exit_status == 2} >= {
        "InputError",
        "ConfigError",
        "KafkaUnavailable",
        "RegistryInvalid",
        "MalformedHl7",
        "SchemaRegistryUnavailable",
    }
    assert {cls.__name__ for cls in classes if cls.exit_status == 1} >= {
        "RuntimeFailure",
        "CommandFailed",
        "AuthenticatorBusy",
        "OverBudget",
        "AvroEncodeError",
    }


# Rewritten elsewhere right now; their exceptions are still to move into processor/errors.py.
_PENDING_MODULES: tuple[str, ...] = ()


def test_every_public_exception_lives_in_processor_errors() -> None:
    import importlib
    import pkgutil

    import processor

    outside = []
    for info in pkgutil.walk_packages(processor.__path__, "processor."):
        if info.name.startswith(_PENDING_MODULES) or info.name in ("processor.errors", "processor.__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                outside.append(f"{info.name}.{name}")
    assert outside == []


def test_old_import_paths_still_work() -> None:
    from processor.avro.codec import AvroEncodeError, SchemaRegistryUnavailable, UndecodableValue
    from processor.edge.admission import BadLength, BodyTooLarge, OverBudget
    from processor.registry.credentials import AuthenticatorBusy as Busy

    assert (AvroEncodeError, SchemaRegistryUnavailable, UndecodableValue) == (
        errors.AvroEncodeError,
        errors.SchemaRegistryUnavailable,
        errors.UndecodableValue,
    )
    assert (BadLength, BodyTooLarge, OverBudget, Busy) == (
        errors.BadLength,
        errors.BodyTooLarge,
        errors.OverBudget,
        errors.AuthenticatorBusy,
    )


# ------------------------------------------------------------------ commands: settings required


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["edge"], "HL7_REGISTRY_FILE and HL7_KAFKA_BOOTSTRAP_SERVERS are not set"),
        (["decode", "hl7.accepted"], "HL7_KAFKA_BOOTSTRAP_SERVERS is not set"),
        (["topics", "create"], "HL7_KAFKA_BOOTSTRAP_SERVERS is not set"),
        (["topics", "create", "--check"], "HL7_KAFKA_BOOTSTRAP_SERVERS is not set"),
        (["acls", "--apply"], "HL7_KAFKA_BOOTSTRAP_SERVERS is not set"),
        (["deadletter", "replay", "--force"], "HL7_KAFKA_BOOTSTRAP_SERVERS is not set"),
    ],
)
def test_commands_name_the_missing_setting_in_one_line(
    argv: list[str],
    missing: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for name in list(os.environ):
        if name.startswith("HL7_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file
    assert main(argv) == 2
    assert _one_line(capsys) == f"hl7-processor: {missing}"


def test_replay_option_errors_are_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["deadletter", "replay", "--reason", "NOT_A_REASON"]) == 2
    assert _one_line(capsys) == "hl7-processor: deadletter replay: unknown reason code(s): NOT_A_REASON"
    assert main(["deadletter", "replay", "--since", "last tuesday"]) == 2
    assert "--since 'last tuesday' is not an ISO-8601 time" in _one_line(capsys)


def test_replay_without_a_registry_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("HL7_REGISTRY_FILE", raising=False)
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.chdir(tmp_path)
    assert main(["deadletter", "replay"]) == 2
    assert "give the current registry (--registry or HL7_REGISTRY_FILE)" in _one_line(capsys)


def test_edge_with_an_unreadable_registry_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("HL7_REGISTRY_FILE", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.chdir(tmp_path)
    assert main(["edge"]) == 2
    line = _one_line(capsys)
    assert line.startswith("hl7-processor: registry file ") and "unreadable" in line
