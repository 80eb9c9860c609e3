"""The stream loop against a fake Kafka session: every row of docs/stream.md's failure table.

No broker: :class:`tests.unit.stream.fake_session.FakeSession` keeps partitions, committed
offsets and one transaction at a time, and fails the calls a test scripts. Each test checks
the guarantee (one output per record, nothing before its commit) and the reaction the
failure table asks for (abort + rewind, replace producer + rewind, StreamFatalError).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from processor.config import Settings
from processor.errors import SessionError
from processor.metrics import PROCESSOR_RECORDS, PROCESSOR_TRANSACTIONS
from processor.registry.loader import parse_registry
from processor.stream import StreamFatalError, StreamProcessor
from processor.stream.txn_errors import TxnAction
from tests.builders import PASSWORD_HASH, hl7_message
from tests.unit.stream.fake_session import LANDED, FakeSession

RAW, ACCEPTED, DEADLETTER, DEDUPE = "t.raw", "t.accepted", "t.deadletter", "t.raw.dedupe"
REGISTRY = parse_registry(f"""
customers:
  - {{id: trust-1, alias: trustalias}}
partners:
  - {{id: mailco, username: partner_mailco, password_hash: "{PASSWORD_HASH}", authorised_by: [trust-1]}}
""".encode())


def message(i: int, pad: int = 0) -> bytes:
    return hl7_message(control_id=b"C%d" % i, kind="PID") + b"NTE|1||" + b"x" * pad + b"\r"


def headers() -> list[tuple[str, bytes]]:
    return [
        ("hl7.ingest_id", str(uuid.uuid4()).encode()),
        ("hl7.principal_id", b"mailco"),
        ("hl7.principal_type", b"partner"),
        ("hl7.received_at", b"1700000000000000"),
        ("hl7.source_ip", b"203.0.113.7"),
        ("hl7.transport", b"http"),
    ]


def encode(topic: str, record: dict[str, Any]) -> bytes:
    """Not Avro: enough to tell outputs apart (topic, reason, source) and keep the payload."""
    head = f"{topic}|{record.get('reason') or ''}|{record['source_partition']}:{record['source_offset']}|"
    return head.encode() + record["payload"]


def source(out_value: bytes) -> tuple[int, int]:
    partition, offset = out_value.split(b"|")[2].split(b":")
    return int(partition), int(offset)


def reason(out_value: bytes) -> str:
    return out_value.split(b"|")[1].decode()


class FakeChangelog:
    """The dedupe changelog as the fake "broker" holds it: committed outputs to its topic."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.restored: list[int] = []

    def check(self) -> None:
        pass

    def read(self, partition: int):  # type: ignore[no-untyped-def]
        from processor.stream.dedupe_codec import decode

        self.restored.append(partition)
        for out in self.harness.fake.topic_outputs(DEDUPE):
            if out.partition == partition:
                yield from decode(out.value) or ()

    def close(self) -> None:
        pass


class Harness:
    """A StreamProcessor wired to a FakeSession with ``per_partition`` records on 2 partitions.

    ``dedupe``: decision row 12 on, its changelog in the fake session (test_loop_dedupe.py);
    off for the tests of the transaction protocol itself, whose call sequences it would change.
    """

    def __init__(self, per_partition: int = 25, batch: int = 10, big: set[tuple[int, int]] = frozenset(),
                 pipeline: int = 2, encoder: Any = encode, dedupe: bool = False) -> None:
        settings = Settings(
            kafka_bootstrap_servers="fake:9092", topic_raw=RAW, topic_accepted=ACCEPTED,
            topic_deadletter=DEADLETTER, batch_max_records=batch, batch_max_ms=5, pipeline_transactions=pipeline,
            dedupe_enabled=dedupe, topic_dedupe=DEDUPE,
        )
        self.changelog = FakeChangelog(self)
        self.session: FakeSession | None = None

        def factory(*args: Any, **kwargs: Any) -> FakeSession:
            self.session = FakeSession(*args, **kwargs)
            return self.session

        self.proc = StreamProcessor(settings, REGISTRY, encode=encoder, session_factory=factory,
                                    changelog_factory=lambda _settings: self.changelog)
        assert self.session is not None
        self.fake: FakeSession = self.session
        for p in (0, 1):
            self.fake.add(RAW, p, [(message(i, 3000 if (p, i) in big else 0), headers())
                                   for i in range(per_partition)])
        self.n = 2 * per_partition

    def run(self) -> None:
        self.proc.run()

    def sources(self) -> Counter[tuple[int, int]]:
        return Counter(source(o.value) for o in self.fake.outputs)

    def assert_exactly_once(self) -> None:
        assert self.sources() == Counter({(p, i): 1 for p in (0, 1) for i in range(self.n // 2)})
        assert self.fake.committed == {(RAW, 0): self.n // 2, (RAW, 1): self.n // 2}


def txns(result: str) -> float:
    return PROCESSOR_TRANSACTIONS.labels(result=result)._value.get()


def test_happy_path_one_transaction_per_batch() -> None:
    h = Harness()
    committed, aborted = txns("committed"), txns("aborted")
    accepted = PROCESSOR_RECORDS.labels(outcome="accepted", reason="", principal="mailco")._value.get()
    h.run()
    h.assert_exactly_once()
    assert h.proc.committed_records == h.n
    assert txns("committed") - committed == h.fake.calls.count("commit") and txns("aborted") == aborted
    assert PROCESSOR_RECORDS.labels(outcome="accepted", reason="", principal="mailco")._value.get() - accepted == h.n
    assert {o.topic for o in h.fake.outputs} == {ACCEPTED}
    assert h.fake.closed_with_flush is True and not h.proc.running and h.proc.live()
    # The eos-transactions.py shape: begin, produce..., send_offsets, commit; never a poll inside.
    first = h.fake.calls.index("begin")
    assert h.fake.calls[first:first + 13] == ["begin", *["produce"] * 10, "send_offsets", "flush"]


@pytest.mark.parametrize("call", ["begin", "send_offsets", "commit"])
def test_abortable_error_aborts_rewinds_and_counts_nothing(call: str) -> None:
    h = Harness()
    h.fake.fail[call] = [SessionError(TxnAction.ABORT, "CONCURRENT_TRANSACTIONS")]
    aborted = txns("aborted")
    h.run()
    assert txns("aborted") - aborted == 1
    i = h.fake.calls.index("abort")
    assert h.fake.calls[i + 1] == "rewind" and "replace_producer" not in h.fake.calls
    assert h.fake.producers_created == 1
    h.assert_exactly_once()  # the aborted batch was re-read and committed once
    assert h.proc.committed_records == h.n  # counted once: only when its retry committed


def test_abort_whose_outcome_is_unknown_replaces_the_producer() -> None:
    h = Harness()
    h.fake.fail["commit"] = [SessionError(TxnAction.ABORT, "INVALID_TXN_STATE")]
    h.fake.fail["abort"] = [SessionError(TxnAction.RECREATE, "_TIMED_OUT")]
    h.run()
    i = h.fake.calls.index("abort")
    assert h.fake.calls[i + 1: i + 3] == ["replace_producer", "rewind"]
    h.assert_exactly_once()
    assert h.proc.committed_records == h.n


@pytest.mark.parametrize("landed", [False, True], ids=["not-committed", "committed"])
def test_ambiguous_commit_replaces_producer_rewinds_and_counts_only_if_committed(landed: bool) -> None:
    h = Harness()
    timeout = SessionError(TxnAction.RECREATE, "_TIMED_OUT: commit")
    h.fake.fail["commit"] = [None, (timeout, LANDED) if landed else timeout]  # type: ignore[list-item]
    h.fake.fail["commit"].pop(0)
    committed, aborted = txns("committed"), txns("aborted")
    h.run()
    i = h.fake.calls.index("replace_producer")
    assert h.fake.calls[i + 1] == "rewind" and "abort" not in h.fake.calls
    assert h.proc.producers_created == 2
    h.assert_exactly_once()
    assert h.proc.committed_records == h.n  # neither dropped nor doubled
    landed_commits = h.fake.calls.count("commit") - (0 if landed else 1)
    assert txns("committed") - committed == landed_commits
    assert txns("aborted") - aborted == (0 if landed else 1)


def test_ambiguous_commit_with_unreadable_offsets_counts_it_aborted() -> None:
    """Committed offsets unreadable after the replacement: counted as aborted (may undercount
    one batch), nothing lost or doubled."""
    h = Harness()
    h.fake.fail["commit"] = [(SessionError(TxnAction.RECREATE, "_TIMED_OUT"), LANDED)]
    h.fake.rewind_unreadable = True
    aborted = txns("aborted")
    h.run()
    assert txns("aborted") - aborted == 1
    h.assert_exactly_once()
    assert h.proc.committed_records == h.n - 10  # the batch that landed is not counted


@pytest.mark.parametrize("call", ["begin", "send_offsets", "commit"])
def test_fatal_error_raises_stream_fatal_error(call: str, caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.fake.fail[call] = [SessionError(TxnAction.FATAL, "PRODUCER_FENCED")]
    aborted = txns("aborted")
    with pytest.raises(StreamFatalError, match="PRODUCER_FENCED"):
        h.run()
    assert txns("aborted") - aborted == 1
    assert "FATAL Kafka error" in caplog.text
    assert not h.proc.live() and not h.proc.running
    assert h.fake.closed_with_flush is False  # a fenced producer has nothing to flush
    assert h.fake.outputs == [] and h.fake.committed == {}


def test_fatal_error_on_abort_raises_stream_fatal_error() -> None:
    h = Harness()
    h.fake.fail["commit"] = [SessionError(TxnAction.ABORT, "INVALID_PRODUCER_EPOCH")]
    h.fake.fail["abort"] = [SessionError(TxnAction.FATAL, "PRODUCER_FENCED")]
    with pytest.raises(StreamFatalError):
        h.run()
    assert h.fake.outputs == []


def test_record_too_large_in_a_shared_batch_is_resent_alone_then_dead_lettered() -> None:
    h = Harness(big={(0, 3)})
    h.fake.broker_limit = 2000
    aborted = txns("aborted")
    h.run()
    h.assert_exactly_once()
    # Refused with its 9 neighbours (all suspects), then alone: two aborts.
    assert txns("aborted") - aborted == 2
    by_source = {source(o.value): o for o in h.fake.outputs}
    big = by_source[(0, 3)]
    assert big.topic == DEADLETTER and reason(big.value) == "PROCESSING_ERROR"
    assert big.value.endswith(b"|")  # no payload: the original stays in the raw topic
    assert {n for n, _v in big.headers} <= {n for n, _v in headers()}  # required headers only
    others = [o for s, o in by_source.items() if s != (0, 3)]
    assert {o.topic for o in others} == {ACCEPTED}  # the neighbours keep their payload
    assert all(o.value.endswith(b"\r") for o in others)
    assert h.proc.committed_records == h.n


def test_record_refused_by_the_producer_is_its_slim_dead_letter_in_the_same_transaction() -> None:
    h = Harness(big={(1, 7)})
    h.fake.producer_limit = 2000
    aborted = txns("aborted")
    slim = PROCESSOR_RECORDS.labels(outcome="deadletter", reason="PROCESSING_ERROR", principal="mailco")
    before = slim._value.get()
    h.run()
    assert txns("aborted") == aborted  # nothing was sent: no abort
    h.assert_exactly_once()
    big = next(o for o in h.fake.outputs if source(o.value) == (1, 7))
    assert big.topic == DEADLETTER and big.value.endswith(b"|")
    assert slim._value.get() - before == 1  # counted as what was written


def test_revocation_while_collecting_drops_buffered_records() -> None:
    h = Harness(per_partition=3, batch=10)
    gone = {(RAW, 1)}

    def revoke_on_first_consume(n: int) -> None:
        if n == 1:
            h.fake.revoke(gone)

    h.fake.consume_hook = revoke_on_first_consume
    sent: list[dict] = []
    real_send = h.fake.send_offsets
    h.fake.send_offsets = lambda offsets: (sent.append(dict(offsets)), real_send(offsets))[-1]  # type: ignore[method-assign]
    h.run()
    # poll() took partition 0's first record, consume() revoked partition 1 before its
    # records were buffered... and whatever of partition 1 was buffered is dropped.
    assert all((RAW, 1) not in offsets for offsets in sent)
    assert {source(o.value)[0] for o in h.fake.outputs} == {0}
    assert h.fake.committed == {(RAW, 0): 3}
    assert h.proc.assignment == frozenset({(RAW, 0)})


def test_revocation_drops_records_already_buffered() -> None:
    h = Harness(per_partition=3, batch=10)
    # Poll returns partition 0's first record; buffer a partition-1 record by hand, as if
    # an earlier consume() had returned it, then revoke partition 1 during the next one.
    calls = {"n": 0}
    real_consume = h.fake.consume

    def consume(max_records: int, timeout: float) -> list:
        calls["n"] += 1
        if calls["n"] == 1:
            return [h.fake.records[(RAW, 1)][0]]
        if calls["n"] == 2:
            h.fake.revoke({(RAW, 1)})
        return real_consume(max_records, timeout)

    h.fake.consume = consume  # type: ignore[method-assign]
    h.run()
    assert {source(o.value)[0] for o in h.fake.outputs} == {0}
    assert (RAW, 1) not in h.fake.committed


def test_stop_finishes_the_batch_in_hand() -> None:
    """stop() while a batch is being collected: collecting ends, that batch is committed,
    nothing more is read, the session closes with a flush."""
    h = Harness(per_partition=50, batch=20)
    h.fake.stop_when_drained = False
    real_consume = h.fake.consume

    def consume(max_records: int, timeout: float) -> list:
        got = real_consume(min(max_records, 5), timeout)  # 5 at a time: batch = poll + 4 consumes
        if h.fake._consumes == 6:  # second batch: poll, consume 5, then stop
            h.proc.stop()
        return got

    h.fake.consume = consume  # type: ignore[method-assign]
    h.run()
    assert h.fake.calls[-4:] == ["send_offsets", "flush", "commit", "close"]
    assert h.fake.closed_with_flush is True
    # First batch 1 + 4 * 5 = 20... capped at 20; second batch 1 + 5 + 5 = 11 (stopped early).
    assert len(h.fake.outputs) == h.proc.committed_records == 20 + 11
    assert sum(h.fake.committed.values()) == 31


def test_unexpected_routing_error_is_a_processing_error_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    import processor.stream.processor as loop

    real_route = loop.route

    def flaky(raw: Any, *args: Any, **kwargs: Any) -> Any:
        if (raw.partition, raw.offset) == (0, 5):
            raise RuntimeError("bug")
        return real_route(raw, *args, **kwargs)

    monkeypatch.setattr(loop, "route", flaky)
    h = Harness()
    h.run()
    h.assert_exactly_once()
    bad = next(o for o in h.fake.outputs if source(o.value) == (0, 5))
    assert bad.topic == DEADLETTER and reason(bad.value) == "PROCESSING_ERROR"
    assert bad.headers == []
    assert not bad.value.endswith(b"|")  # the payload is kept


def test_unexpected_error_building_the_raw_record_is_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    import processor.stream.processor as loop

    def broken(msg: Any, headers: Any) -> Any:
        raise ValueError("bad timestamp")

    monkeypatch.setattr(loop, "raw_record", broken)
    h = Harness(per_partition=2)
    h.run()
    h.assert_exactly_once()
    assert {reason(o.value) for o in h.fake.outputs} == {"PROCESSING_ERROR"}


# --- pipelining: transaction k+1 is routed while k commits (docs/stream.md "Pipelining") -----
def test_next_transaction_is_routed_while_the_previous_one_commits() -> None:
    """2 transactions' worth collected at once: the records of the second are encoded while
    the first one's commit is in flight, on another thread; then both commit in order."""
    second_routed = threading.Event()

    def watching(topic: str, record: dict[str, Any]) -> bytes:
        if (record["source_partition"], record["source_offset"]) == (0, 5):  # first of the 2nd txn
            second_routed.set()
        return encode(topic, record)

    h = Harness(per_partition=10, batch=5, encoder=watching)
    seen: list[tuple[bool, str]] = []
    real_commit = h.fake.commit

    def commit() -> None:
        if not seen:  # the first commit waits (bounded) for the second transaction's routing
            seen.append((second_routed.wait(10), threading.current_thread().name))
        real_commit()

    h.fake.commit = commit  # type: ignore[method-assign]
    h.run()
    assert seen[0][0], "the second transaction was not routed while the first one committed"
    assert seen[0][1].startswith("txn-commit")
    h.assert_exactly_once()
    assert [source(o.value) for o in h.fake.outputs[:10]] == [(0, i) for i in range(10)]  # in order
    assert h.fake.calls.count("commit") == 4 and h.proc.committed_records == 20


def test_first_transaction_failing_drops_the_routed_second_one() -> None:
    """The second transaction was routed during the first one's failed commit: none of it is
    produced; both are read again from the committed offsets and committed once."""
    h = Harness(per_partition=10, batch=5)
    h.fake.fail["commit"] = [SessionError(TxnAction.ABORT, "CONCURRENT_TRANSACTIONS")]
    aborted = txns("aborted")
    h.run()
    first_abort = h.fake.calls.index("abort")
    assert h.fake.calls[:first_abort].count("produce") == 5  # only the first transaction's
    assert txns("aborted") - aborted == 1
    h.assert_exactly_once()
    assert h.proc.committed_records == 20


def test_second_transaction_failing_keeps_the_first_and_rewinds_to_its_end() -> None:
    h = Harness(per_partition=10, batch=5)
    h.fake.fail["commit"] = [None, SessionError(TxnAction.ABORT, "CONCURRENT_TRANSACTIONS")]
    h.run()
    assert [source(o.value) for o in h.fake.outputs[:10]] == [(0, i) for i in range(10)]
    h.assert_exactly_once()
    assert h.proc.committed_records == 20


def test_pipeline_of_one_is_one_transaction_per_collected_batch() -> None:
    h = Harness(per_partition=10, batch=5, pipeline=1)
    h.run()
    h.assert_exactly_once()
    assert h.fake.calls.count("commit") == 4
    assert "txn-commit" not in {t.name for t in threading.enumerate()}
