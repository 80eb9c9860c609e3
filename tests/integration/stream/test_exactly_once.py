"""Exactly-once across SIGKILLs and takeover: 20,000 raw records -> exactly 20,000 outputs.

The processor runs as real ``python -m processor stream`` subprocesses and is
killed with SIGKILL at random points after it has committed some progress
(mid-batch, mid-commit, wherever it happens to be). A ``read_committed`` consumer
then must see exactly one output per raw record across ``hl7.accepted`` and
``hl7.deadletter``: 20,000 records with 20,000 distinct ingest ids.

Short session and transaction timeouts (6 s / 10 s) keep takeover quick.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.builders import hl7_message, registry_text
from tests.integration.stream.stream_kit import (
    RawIn,
    committed_total,
    produce_raw,
    raw_headers,
    read_outputs,
    stream_settings,
    wait_for,
    write_atomically,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N = 20_000
REPO = Path(__file__).resolve().parents[3]


def _raw_records() -> tuple[list[RawIn], set[str]]:
    records: list[RawIn] = []
    ids: set[str] = set()
    for i in range(N):
        ingest = str(uuid.uuid4())
        ids.add(ingest)
        # Every 7th record fails the decision table, so both output topics are exercised.
        msh4 = b"nosuch{trustalias}" if i % 7 == 0 else b"trustalias{trustalias}"
        records.append(
            RawIn(hl7_message(msh4, b"EO%d" % i, kind="ADT" if i % 2 else "ORU"),
                  raw_headers(ingest_id=ingest), key=b"mailco|" + msh4)
        )
    return records, ids


class Proc:
    """One ``hl7-processor stream`` subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], txn_id: str, log_dir: Path, n: int) -> None:
        self.log = log_dir / f"{txn_id}.{n}.log"
        self._fh = self.log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "processor", "stream", "--transactional-id", txn_id],
            env=env, cwd=log_dir, stdout=self._fh, stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)
        self._fh.close()

    def terminate(self) -> int:
        # SIGTERM before the process has installed its handlers (still importing) kills it
        # with -15: a race of the test, not of the processor. Its producer being ready
        # is logged after the handlers are in place.
        assert wait_for(lambda: b"transactional producer ready" in self.log.read_bytes(), 60, interval=0.1), (
            f"processor never became ready: {self.log.read_text()[-2000:]}"
        )
        self.popen.send_signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(60)
        finally:
            self._fh.close()
        return rc


def _env(settings, registry_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HL7_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "HL7_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "HL7_REGISTRY_FILE": str(registry_file),
            "HL7_TOPIC_RAW": settings.topic_raw,
            "HL7_TOPIC_ACCEPTED": settings.topic_accepted,
            "HL7_TOPIC_DEADLETTER": settings.topic_deadletter,
            "HL7_CONSUMER_GROUP": settings.consumer_group,
            "HL7_METRICS_PORT": "0",
            "HL7_BATCH_MAX_RECORDS": "200",
            "HL7_BATCH_MAX_MS": "50",
            "HL7_TRANSACTION_TIMEOUT_MS": "10000",
            "HL7_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "HL7_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        }
    )
    return env


def _check_exactly_once(settings, ids: set[str]) -> None:
    out = read_outputs(settings, expect=N, timeout=120)
    seen = [r.header("hl7.ingest_id") for r in out]
    dupes = len(seen) - len(set(seen))
    assert dupes == 0, f"{dupes} duplicate outputs"
    assert len(out) == N, f"{len(out)} outputs for {N} raw records"
    assert set(seen) == ids
    accepted = sum(1 for r in out if r.topic == settings.topic_accepted)
    assert accepted == N - len(range(0, N, 7))


def _setup(kafka_bootstrap: str, unique_name, tmp_path: Path, partitions: int):  # type: ignore[no-untyped-def]
    registry_file = tmp_path / "registry.yaml"
    write_atomically(registry_file, registry_text())
    settings = stream_settings(kafka_bootstrap, unique_name, registry_file, topic_partitions=partitions)
    records, ids = _raw_records()
    produce_raw(settings, records)
    return settings, _env(settings, registry_file), ids


def _wait_progress(settings, above: int, procs: list[Proc], timeout: float = 90.0) -> int:
    def progressed() -> bool:
        for p in procs:
            assert p.popen.poll() is None, f"processor exited early: {p.log.read_text()[-2000:]}"
        return committed_total(settings) >= above

    assert wait_for(progressed, timeout, interval=0.1), f"no progress past {above}"
    return committed_total(settings)


def test_exactly_once_across_repeated_sigkill(kafka_bootstrap: str, unique_name, tmp_path: Path) -> None:
    settings, env, ids = _setup(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    rng = random.Random()
    txn_id = unique_name("eo-txn")
    done = 0
    kills = 0
    for n in range(5):
        proc = Proc(env, txn_id, tmp_path, n)
        # Capped below N: a fast processor may be close to the end already (a target past N
        # can never be reached); the kill count below still guards the test's point. Small
        # steps: the processor routes ~15,000 records/s, so a kill must follow progress soon.
        done = _wait_progress(settings, min(done + rng.randint(100, 1200), N - 1), [proc])
        time.sleep(rng.uniform(0.0, 0.1))  # land anywhere: mid-collect, mid-produce, mid-commit
        proc.kill()
        if committed_total(settings) < N:
            kills += 1
        done = committed_total(settings)
    assert kills >= 3, "the processor finished before it could be killed three times"
    final = Proc(env, txn_id, tmp_path, 99)
    _wait_progress(settings, N, [final], timeout=180)
    assert final.terminate() == 0
    _check_exactly_once(settings, ids)


def test_exactly_once_when_one_of_two_instances_dies(
    kafka_bootstrap: str, unique_name, tmp_path: Path
) -> None:
    settings, env, ids = _setup(kafka_bootstrap, unique_name, tmp_path, partitions=4)
    # Small batches (many transactions, many kill points), and both members still have work
    # once both own partitions: at full speed one processor routes all 20,000 records first.
    env = dict(env, HL7_BATCH_MAX_RECORDS="20", HL7_PIPELINE_TRANSACTIONS="3")  # pipelined: docs/stream.md
    a = Proc(env, unique_name("eo-a"), tmp_path, 0)
    b = Proc(env, unique_name("eo-b"), tmp_path, 0)
    # Both members must own partitions before one of them dies.
    assert wait_for(lambda: _owns_partitions(a) and _owns_partitions(b), 90, interval=0.2), (
        a.log.read_text()[-1500:] + b.log.read_text()[-1500:]
    )
    done = _wait_progress(settings, random.randint(1000, 4000), [a, b])
    assert done < N, "finished before the kill; not a takeover test"
    a.kill()
    _wait_progress(settings, N, [b], timeout=180)  # the survivor takes over a's partitions
    assert b.terminate() == 0
    _check_exactly_once(settings, ids)


def _owns_partitions(proc: Proc) -> bool:
    """The latest rebalance log line of this process says it owns at least one partition."""
    lines = [ln for ln in proc.log.read_text(errors="replace").splitlines() if "; owning [" in ln]
    return bool(lines) and not lines[-1].endswith("owning []")


def test_fenced_process_exits_with_code_1(kafka_bootstrap: str, unique_name, tmp_path: Path) -> None:
    """A second process with the same transactional id fences the first: exit 1, clear log line."""
    settings, env, ids = _setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    txn_id = unique_name("eo-same")
    # Small batches keep the first busy (a fenced producer learns it at its next transaction).
    first = Proc(dict(env, HL7_BATCH_MAX_RECORDS="10"), txn_id, tmp_path, 0)
    _wait_progress(settings, 500, [first])
    assert committed_total(settings) < N
    second = Proc(env, txn_id, tmp_path, 1)
    try:
        assert first.popen.wait(120) == 1
    finally:
        first._fh.close()
    assert "FATAL Kafka error" in first.log.read_text()
    _wait_progress(settings, N, [second], timeout=180)
    assert second.terminate() == 0
    _check_exactly_once(settings, ids)
