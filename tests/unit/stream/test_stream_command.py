"""``hl7-processor stream`` refuses unusable configuration with a clear message (exit 2)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from processor.cli import main as cli_main
from processor.commands.stream import main


def args() -> argparse.Namespace:
    return argparse.Namespace(metrics_port=None, transactional_id=None)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("HL7_KAFKA_BOOTSTRAP_SERVERS", "HL7_REGISTRY_FILE"):
        monkeypatch.delenv(name, raising=False)


def run_cli(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli_main(["stream"])
    return code, capsys.readouterr().err


def test_registry_file_required(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, err = run_cli(capsys)
    assert code == 2
    assert err.startswith("hl7-processor: ") and "HL7_REGISTRY_FILE" in err and err.count("\n") == 1


def test_bootstrap_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys)
    assert code == 2
    assert err.startswith("hl7-processor: ") and "HL7_KAFKA_BOOTSTRAP_SERVERS" in err and err.count("\n") == 1


def test_invalid_registry_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "registry.yaml"
    bad.write_text("customers: [{id: x}]\n")
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("HL7_REGISTRY_FILE", str(bad))
    code, err = run_cli(capsys)
    assert code == 2
    assert err.startswith("hl7-processor: ") and "Traceback" not in err


def test_signals_reach_the_processor_through_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream command stops on SIGTERM through processor.shutdown.on_shutdown_signal: the
    callback runs on a thread of its own, never inside the handler (which could deadlock)."""
    import os
    import signal
    import threading

    from processor.shutdown import on_shutdown_signal

    ran: list[str] = []
    done = threading.Event()

    def callback() -> None:
        ran.append(threading.current_thread().name)
        done.set()

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        on_shutdown_signal(callback)
        os.kill(os.getpid(), signal.SIGTERM)
        assert done.wait(5)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert ran == [f"signal-{int(signal.SIGTERM)}"]


def test_stream_command_installs_no_handler_of_its_own() -> None:
    import inspect

    import processor.commands.stream as command

    source = inspect.getsource(command)
    assert "signal.signal(" not in source and "on_shutdown_signal(" in source
