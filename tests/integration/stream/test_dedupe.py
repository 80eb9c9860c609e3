"""Decision row 12 on the real broker: a resend of an accepted message is routed once.

Every message of a 2,000-message stream is sent twice, the resend interleaved later in the
stream (50-800 records on) and often arriving "through a second edge" (another ingest id,
transport, source address and a later received_at). A ``read_committed`` consumer must then
see exactly 2,000 accepted records and 2,000 ``DUPLICATE`` dead letters, each naming its
original's ingest id and its place in ``hl7.accepted`` -- undisturbed by a processor in a
thread, by three SIGKILLs of a ``python -m processor stream`` subprocess while the stream
is fed, and by two processes handing partitions over in rebalances (both restore the
dedupe state from the changelog when partitions are assigned).
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY as METRICS

from processor.avro.codec import AvroCodec
from processor.config import Settings
from processor.registry.loader import parse_registry
from processor.stream import StreamProcessor
from tests.builders import hl7_message, registry_text
from tests.integration.stream.stream_kit import (
    OutRecord,
    RawIn,
    produce_raw,
    raw_headers,
    read_outputs,
    stream_settings,
    wait_for,
    write_atomically,
)
from tests.integration.stream.test_exactly_once import Proc, _env, _owns_partitions, _wait_progress

pytestmark = pytest.mark.kafka

N = 2_000
# Senders: (principal, type, MSH-4). Customer logins may send any plain MSH-4 (a legacy
# facility code), which spreads the stream over several keys and so over the partitions.
SENDERS = [
    ("mailco", "partner", b"trustalias{trustalias}"),
    ("mailco", "partner", b"conalias{conalias}"),
    ("mailco", "partner", b"conalias{trustalias}"),
    *[("cust-login", "customer", b"FAC%d" % n) for n in range(7)],
]


def _stream(n: int, seed: int) -> list[RawIn]:
    """``n`` messages, each followed 50-800 records later by its resend (same key, bytes)."""
    rng = random.Random(seed)
    placed: list[tuple[float, RawIn]] = []
    for i in range(n):
        principal, ptype, msh4 = SENDERS[i % len(SENDERS)]
        value = hl7_message(msh4, b"RS%05d" % i, kind="ADT" if i % 2 else "ORU")
        key = f"{principal}|".encode() + msh4
        sent_us = time.time_ns() // 1000 - 3_600_000_000 + i * 1000
        placed.append((i, RawIn(value, raw_headers(principal, ptype, received_at_us=sent_us), key)))
        if rng.random() < 0.5:  # through a second edge: another transport, address and clock
            headers = raw_headers(principal, ptype, transport=rng.choice(["soap", "mllp"]),
                                  received_at_us=sent_us + rng.randint(1, 30_000_000))
            headers = [(k, b"198.51.100.9" if k == "hl7.source_ip" else v) for k, v in headers]
        else:  # the same edge again: the partner's HTTP client timed out
            headers = raw_headers(principal, ptype, received_at_us=sent_us + rng.randint(1, 30_000_000))
        placed.append((i + rng.randint(50, 800) + 0.5, RawIn(value, headers, key)))
    placed.sort(key=lambda item: item[0])
    return [rec for _pos, rec in placed]


def _check_once_each(settings: Settings, out: list[OutRecord], n: int) -> None:
    """Exactly ``n`` accepted and ``n`` DUPLICATE dead letters; each DUPLICATE comes after its
    original in the raw partition and names the original's ingest id, partition and offset."""
    codec = AvroCodec.from_settings(settings)
    ids = Counter(r.header("hl7.ingest_id") for r in out)
    assert len(ids) == len(out) == 2 * n and set(ids.values()) == {1}, "one output per raw record"
    accepted = {}
    duplicates = []
    for r in out:
        rec = codec.decode(r.value)
        message = (rec["principal_id"], rec["sending_facility"], rec["message_control_id"])
        if r.topic == settings.topic_accepted:
            assert message not in accepted, f"accepted twice: {message[2]}"
            accepted[message] = (r, rec)
        else:
            assert rec["reason"] == "DUPLICATE", (rec["reason"], rec["detail"])
            duplicates.append((message, rec))
    assert len(accepted) == n and len(duplicates) == n
    for message, dup in duplicates:
        where, original = accepted[message]
        assert original["source_partition"] == dup["source_partition"]
        assert original["source_offset"] < dup["source_offset"]
        assert original["ingest_id"] in dup["detail"]
        assert re.search(rf"partition {where.partition} offset {where.offset}\b", dup["detail"]), dup["detail"]


def _setup(kafka_bootstrap: str, unique_name, tmp_path: Path, partitions: int, **extra):  # type: ignore[no-untyped-def]
    registry_file = tmp_path / "registry.yaml"
    write_atomically(registry_file, registry_text())
    settings = stream_settings(kafka_bootstrap, unique_name, registry_file, topic_partitions=partitions, **extra)
    return settings, registry_file


class _Thread:
    def __init__(self, proc: StreamProcessor) -> None:
        self.proc, self.errors = proc, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.proc.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.errors.append(exc)

    def stop(self) -> None:
        self.proc.stop()
        self.thread.join(60)
        assert not self.thread.is_alive() and not self.errors, self.errors


def test_every_message_sent_twice_is_accepted_once(kafka_bootstrap: str, unique_name, tmp_path: Path) -> None:
    settings, _ = _setup(kafka_bootstrap, unique_name, tmp_path, 3, batch_max_records=100, batch_max_ms=20)
    produce_raw(settings, _stream(N, seed=1))
    runner = _Thread(StreamProcessor(settings, parse_registry(registry_text().encode())))
    try:
        out = read_outputs(settings, expect=2 * N, timeout=180)
    finally:
        runner.stop()
    _check_once_each(settings, out, N)


def _feed(settings: Settings, records: list[RawIn], chunks: int):  # type: ignore[no-untyped-def]
    size = -(-len(records) // chunks)
    for k in range(chunks):
        produce_raw(settings, records[k * size:(k + 1) * size])
        yield k, min((k + 1) * size, len(records))


@pytest.mark.slow
def test_accepted_once_across_three_sigkills(kafka_bootstrap: str, unique_name, tmp_path: Path) -> None:
    """The stream is fed in 20 chunks; after chunks 5, 10 and 15 the processor is SIGKILLed
    (mid-transaction or idle, wherever it is) and restarted with the same transactional id.
    Resends straddle the kills: their originals were committed by an earlier life."""
    settings, registry_file = _setup(kafka_bootstrap, unique_name, tmp_path, 3)
    env = dict(_env(settings, registry_file), HL7_BATCH_MAX_RECORDS="50")
    rng = random.Random(2)
    txn_id = unique_name("dd-txn")
    proc = Proc(env, txn_id, tmp_path, 0)
    kills, fed = 0, 0
    for k, total in _feed(settings, _stream(N, seed=3), chunks=20):
        if k in (5, 10, 15):
            _wait_progress(settings, fed - 100, [proc])  # this life has done some work
            time.sleep(rng.uniform(0.0, 0.15))  # kill anywhere: collecting, producing, committing
            proc.kill()
            kills += 1
            proc = Proc(env, txn_id, tmp_path, k)
        fed = total
    assert kills == 3
    _wait_progress(settings, 2 * N, [proc], timeout=180)
    assert proc.terminate() == 0
    _check_once_each(settings, read_outputs(settings, expect=2 * N, timeout=120), N)


@pytest.mark.slow
def test_accepted_once_while_two_processors_rebalance(kafka_bootstrap: str, unique_name, tmp_path: Path) -> None:
    """A alone; B joins after chunk 6 (partitions move to B, which restores their state);
    A leaves after chunk 13 (B takes the rest, restoring again); B finishes."""
    settings, registry_file = _setup(kafka_bootstrap, unique_name, tmp_path, 4)
    env = dict(_env(settings, registry_file), HL7_BATCH_MAX_RECORDS="50")
    a = Proc(env, unique_name("dd-a"), tmp_path, 0)
    b = None
    fed = 0
    for k, total in _feed(settings, _stream(N, seed=4), chunks=20):
        if k == 6:
            _wait_progress(settings, fed - 100, [a])
            b = Proc(env, unique_name("dd-b"), tmp_path, 0)
            assert wait_for(lambda: _owns_partitions(b), 90, interval=0.2), b.log.read_text()[-2000:]
        if k == 13:
            assert b is not None
            _wait_progress(settings, fed - 100, [a, b])
            assert a.terminate() == 0
        fed = total
    assert b is not None
    _wait_progress(settings, 2 * N, [b], timeout=180)
    assert b.terminate() == 0
    restored = re.findall(r"dedupe state of partition \d+ restored: (\d+) entries", b.log.read_text())
    assert restored and max(int(n) for n in restored) > 0, "B restored no state from the changelog"
    _check_once_each(settings, read_outputs(settings, expect=2 * N, timeout=120), N)


def test_changed_payload_and_resend_after_the_window_are_accepted(
    kafka_bootstrap: str, unique_name, tmp_path: Path
) -> None:
    """Same MSH-10, other payload: accepted and counted as control id reuse. A resend whose
    received_at is more than HL7_DEDUPE_WINDOW after the original's: accepted again (and its
    own resend is a DUPLICATE of it). Times come from hl7.received_at: no waiting."""
    settings, _ = _setup(kafka_bootstrap, unique_name, tmp_path, 1, dedupe_window="60s", batch_max_ms=20)
    key = b"mailco|trustalias{trustalias}"
    original = hl7_message(control_id=b"W1", kind="ADT")
    changed = original.replace(b"WARD1", b"WARD2")
    t0 = time.time_ns() // 1000 - 600_000_000

    def rec(value: bytes, at_s: float) -> RawIn:
        return RawIn(value, raw_headers(ingest_id=str(uuid.uuid4()), received_at_us=t0 + int(at_s * 1e6)), key)

    plan = [  # (record, expected topic kind, expected reason)
        (rec(original, 0), "accepted", None),
        (rec(changed, 1), "accepted", None),  # same MSH-10, other payload
        (rec(original, 59), "deadletter", "DUPLICATE"),  # inside the window
        (rec(changed, 30), "deadletter", "DUPLICATE"),
        (rec(original, 61), "accepted", None),  # 61 s after the original: outside the window
        (rec(original, 62), "deadletter", "DUPLICATE"),  # a resend of that one
    ]
    reused = {"principal": "mailco"}
    before = METRICS.get_sample_value("hl7_processor_control_id_reused_total", reused) or 0.0
    produce_raw(settings, [r for r, _t, _r in plan])
    runner = _Thread(StreamProcessor(settings, parse_registry(registry_text().encode())))
    try:
        out = read_outputs(settings, expect=len(plan), timeout=90)
    finally:
        runner.stop()
    codec = AvroCodec.from_settings(settings)
    by_ingest = {r.header("hl7.ingest_id"): r for r in out}
    assert len(out) == len(plan)
    for raw, kind, reason in plan:
        got = by_ingest[dict(raw.headers)["hl7.ingest_id"].decode()]
        assert got.topic == getattr(settings, f"topic_{kind}")
        assert codec.decode(got.value).get("reason") == reason
    last = codec.decode(by_ingest[dict(plan[-1][0].headers)["hl7.ingest_id"].decode()].value)
    assert dict(plan[4][0].headers)["hl7.ingest_id"].decode() in last["detail"]  # the newer original
    # Reuse counted twice: "changed" (1 s) against "original" (0 s), and the re-acceptance of
    # "original" at 61 s against "changed" (1 s, still within the window, another payload).
    assert (METRICS.get_sample_value("hl7_processor_control_id_reused_total", reused) or 0.0) - before == 2
