"""``--log-level`` is validated; ``HL7_LOG_FORMAT=json`` gives one JSON object per log line."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from processor import cli
from processor.cli import JsonLogFormatter, build_parser, main

_ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in __import__("os").environ if n.upper().startswith("HL7_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file


@contextmanager
def _unconfigured_root_logger() -> Iterator[None]:
    """Root as in a fresh process (no handlers), so ``main`` configures it; restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _logging_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command runs a handler that logs a line and an exception."""

    def handler(_args: object) -> int:
        log = logging.getLogger("processor.test")
        log.info("partner %s sent %d message(s)", "mailco", 2)
        try:
            secret = "PID|1||123^^^NHS||DOE^JOHN"  # noqa: F841 - a local that must never be logged
            raise ValueError("bad thing")
        except ValueError:
            log.exception("it failed")
        log.debug("not shown at INFO")
        return 0

    monkeypatch.setattr(cli, "_resolve", lambda _target: handler)


def test_invalid_log_level_exits_2_with_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--log-level", "verbose", "registry", "check", "registry.yaml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "--log-level" in errors[0] and "'verbose'" in errors[0]
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in errors[0]


@pytest.mark.parametrize("given", ["debug", "Info", "WARNING", "error", "critical"])
def test_log_level_is_case_insensitive(given: str) -> None:
    args = build_parser().parse_args(["--log-level", given, "registry", "check", "x.yaml"])
    assert args.log_level == given.upper()


def test_json_format_gives_one_parseable_object_per_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL7_LOG_FORMAT", "json")
    _logging_command(monkeypatch)
    with _unconfigured_root_logger():
        assert main(["registry", "check", "registry.yaml"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    info, error = records
    assert list(info) == ["ts", "level", "logger", "message"]
    assert _ISO_UTC.match(info["ts"])
    assert (info["level"], info["logger"], info["message"]) == ("INFO", "processor.test", "partner mailco sent 2 message(s)")
    assert error["level"] == "ERROR" and error["message"] == "it failed"
    assert error["exc_type"] == "ValueError"
    assert "DOE^JOHN" not in lines[1]  # frames, never local variables


def test_json_format_is_case_insensitive_and_respects_the_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL7_LOG_FORMAT", "JSON")
    _logging_command(monkeypatch)
    with _unconfigured_root_logger():
        assert main(["--log-level", "debug", "registry", "check", "registry.yaml"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["level"] for r in records] == ["INFO", "ERROR", "DEBUG"]


def test_json_format_from_the_env_file(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HL7_LOG_FORMAT=json\n")
    _logging_command(monkeypatch)
    with _unconfigured_root_logger():
        assert main(["registry", "check", "registry.yaml"]) == 0
    assert all(json.loads(line) for line in capsys.readouterr().err.splitlines())


def test_text_format_is_the_default(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _logging_command(monkeypatch)
    with _unconfigured_root_logger():
        assert main(["registry", "check", "registry.yaml"]) == 0
    err = capsys.readouterr().err
    assert " INFO processor.test partner mailco sent 2 message(s)" in err
    assert "Traceback" in err  # text keeps the usual traceback
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_invalid_log_format_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL7_LOG_FORMAT", "xml")
    _logging_command(monkeypatch)
    with _unconfigured_root_logger():
        assert main(["registry", "check", "registry.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hl7-processor: invalid configuration: HL7_LOG_FORMAT")


def test_another_bad_setting_does_not_stop_commands_that_do_not_use_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL7_METRICS_PORT", "not-a-port")
    _logging_command(monkeypatch)
    with _unconfigured_root_logger():
        assert main(["registry", "check", "registry.yaml"]) == 0
    assert "partner mailco" in capsys.readouterr().err


def test_formatter_output() -> None:
    formatter = JsonLogFormatter()
    try:
        raise KeyError("k")
    except KeyError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("processor.x", logging.WARNING, __file__, 1, "a \"quoted\"\nline %s", ("x",), exc_info)
    record.created = 1_795_776_224.123456
    line = formatter.format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["ts"].startswith("2026-11-27T10:43:44.12") and out["ts"].endswith("Z")
    assert out["message"] == "a \"quoted\"\nline x"
    assert out["exc_type"] == "KeyError"
    assert out["traceback"].startswith("Traceback (most recent call last):")
    plain = json.loads(formatter.format(logging.LogRecord("p", logging.INFO, __file__, 1, "m", None, None)))
    assert set(plain) == {"ts", "level", "logger", "message"}
