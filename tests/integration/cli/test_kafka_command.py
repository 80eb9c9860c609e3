"""``hl7-processor kafka``: a usable broker, and a clean stop on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.kafka


def _read_line(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matching {pattern!r} (exit {proc.poll()})")


def _jvm_pids_for(data_dir: str) -> list[str]:
    out = subprocess.run(["ps", "-ewwo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if "kafka.Kafka" in line and data_dir in line]


def test_prints_a_working_bootstrap_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    stderr_file = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "kafka", "--port", "0"],
        stdout=subprocess.PIPE, stderr=stderr_file, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        try:
            bootstrap = _read_line(proc, r"^bootstrap: (\S+)", 120).group(1)
        except AssertionError as exc:
            stderr_file.flush()
            raise AssertionError(f"{exc}; stderr: {(tmp_path / 'stderr.txt').read_text()[-2000:]}") from None
        data_dir = _read_line(proc, r"^data: (\S+)", 10).group(1)

        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce("cli-smoke", value=b"hello")
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "smoke"})
        consumer.assign([TopicPartition("cli-smoke", 0, 0)])
        msg = None
        for _ in range(40):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                break
        consumer.close()
        del producer, consumer
        assert msg is not None and msg.value() == b"hello"
        assert _jvm_pids_for(data_dir)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert _jvm_pids_for(data_dir) == []
        assert not Path(data_dir).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
