"""Decision row 12 in the loop, against the fake session: what is remembered, when, and
what is forgotten (abort, revoke) or restored (assign, restart) from the changelog.

The fake "broker" keeps the changelog as committed outputs to its topic, so a restore
reads exactly what committed transactions wrote, and nothing of an aborted one.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from processor.errors import SessionError
from processor.metrics import PROCESSOR_CONTROL_ID_REUSED
from processor.stream.dedupe_codec import decode
from processor.stream.txn_errors import TxnAction
from tests.builders import hl7_message
from tests.unit.stream.fake_session import LANDED
from tests.unit.stream.test_loop import ACCEPTED, DEADLETTER, DEDUPE, RAW, Harness, headers, message


def encode(topic: str, record: dict[str, Any]) -> bytes:
    """Not Avro: topic, reason, source, ingest id, detail (+ MSH-10 of a dead letter), then the payload."""
    ingest = record.get("ingest_id") or ""
    detail = record.get("detail") or ""
    if "reason" in record:
        detail += f" [MSH-10 {record.get('message_control_id')}]"
    head = (f"{topic}|{record.get('reason') or ''}|{record['source_partition']}:{record['source_offset']}|"
            f"{ingest}|{detail}|")
    return head.encode() + record["payload"]


def fields(out_value: bytes) -> tuple[str, tuple[int, int], str, str]:
    _topic, reason, src, ingest, detail = out_value.split(b"|", 5)[:5]
    p, o = src.split(b":")
    return reason.decode(), (int(p), int(o)), ingest.decode(), detail.decode()


def dedupe_harness(plan: dict[int, list[int]], batch: int = 10, pipeline: int = 2) -> Harness:
    """Partition -> message numbers in log order (a repeated number is a resend: same bytes,
    new ingest id); the processor has row 12 on."""
    h = Harness(per_partition=0, batch=batch, pipeline=pipeline, encoder=encode, dedupe=True)
    for partition, numbers in plan.items():
        h.fake.add(RAW, partition, [(message(i), headers()) for i in numbers])
    h.n = sum(len(v) for v in plan.values())
    return h


def outputs(h: Harness) -> list[tuple[str, str, tuple[int, int], str, str, int]]:
    """(topic, reason, source, ingest id, detail, offset) of every committed output but the changelog."""
    return [(o.topic, *fields(o.value), o.offset) for o in h.fake.outputs if o.topic != DEDUPE]


def ingest_of(h: Harness, partition: int, offset: int) -> str:
    msg = h.fake.records[(RAW, partition)][offset]
    return dict(msg.headers())["hl7.ingest_id"].decode()


def assert_one_output_each(h: Harness) -> None:
    sources = Counter(src for _t, _r, src, _i, _d, _o in outputs(h))
    assert set(sources.values()) == {1} and sum(sources.values()) == h.n


def duplicate_of(h: Harness, out: tuple[str, str, tuple[int, int], str, str, int],
                 original: tuple[int, int]) -> None:
    """``out`` is a DUPLICATE whose detail names ``original``'s ingest id and accepted offset."""
    topic, reason, _src, _ingest, detail, _off = out
    assert (topic, reason) == (DEADLETTER, "DUPLICATE")
    accepted = {src: off for t, _r, src, _i, _d, off in outputs(h) if t == ACCEPTED}
    assert ingest_of(h, *original) in detail
    assert re.search(rf"{ACCEPTED} partition 0 offset {accepted[original]}\b", detail), detail


def test_resend_in_the_same_transaction_is_a_duplicate_of_the_first() -> None:
    h = dedupe_harness({0: [1, 2, 1, 3, 1]})
    h.run()
    assert_one_output_each(h)
    by_source = {src: out for out in outputs(h) for src in [out[2]]}
    assert [by_source[(0, i)][0] for i in range(5)] == [ACCEPTED, ACCEPTED, DEADLETTER, ACCEPTED, DEADLETTER]
    duplicate_of(h, by_source[(0, 2)], (0, 0))
    duplicate_of(h, by_source[(0, 4)], (0, 0))
    assert by_source[(0, 4)][4].endswith("[MSH-10 C1]")  # the dead letter keeps the MSH fields
    # One changelog record per transaction and raw partition (the partition's number), one
    # entry in it per accepted message.
    records = h.fake.topic_outputs(DEDUPE)
    log = [e for o in records for e in decode(o.value)]
    assert len(records) == 1 and records[0].partition == 0 and len(log) == 3
    accepted_at = sorted(off for t, _r, _s, _i, _d, off in outputs(h) if t == ACCEPTED)
    assert sorted(e.accepted_offset for e in log) == accepted_at  # known before the changelog is written


@pytest.mark.parametrize("pipeline", [1, 2], ids=["next-collect", "next-sub-batch"])
def test_resend_in_a_later_transaction_is_a_duplicate(pipeline: int) -> None:
    h = dedupe_harness({0: [1, 2, 3, 4, 1, 2]}, batch=2, pipeline=pipeline)
    h.run()
    assert_one_output_each(h)
    by_source = {out[2]: out for out in outputs(h)}
    duplicate_of(h, by_source[(0, 4)], (0, 0))
    duplicate_of(h, by_source[(0, 5)], (0, 1))
    assert by_source[(0, 5)][4].endswith("[MSH-10 C2]")
    assert sum(1 for out in outputs(h) if out[0] == ACCEPTED) == 4


def test_state_is_per_partition_like_the_raw_topic() -> None:
    h = dedupe_harness({0: [1], 1: [1]})  # same bytes on two partitions: two senders' keys
    h.run()
    assert [out[0] for out in outputs(h)] == [ACCEPTED, ACCEPTED]
    assert sorted(o.partition for o in h.fake.topic_outputs(DEDUPE)) == [0, 1]  # one record each


def test_same_control_id_with_another_payload_is_accepted_and_counted() -> None:
    h = dedupe_harness({})
    first = hl7_message(control_id=b"SAME", kind="PID")
    h.fake.add(RAW, 0, [(first, headers()), (first + b"NTE|1||changed\r", headers())])
    h.n = 2
    reused = PROCESSOR_CONTROL_ID_REUSED.labels(principal="mailco")
    before = reused._value.get()
    h.run()
    assert [out[0] for out in outputs(h)] == [ACCEPTED, ACCEPTED]
    assert reused._value.get() - before == 1


@pytest.mark.parametrize("call", ["send_offsets", "commit"])
def test_abort_forgets_the_pending_entries(call: str) -> None:
    """Aborted: the changelog records and the pending entries are gone, so on the retry the
    original is accepted again (not a DUPLICATE of its own aborted acceptance)."""
    h = dedupe_harness({0: [1, 2, 1]}, batch=3, pipeline=1)
    h.fake.fail[call] = [SessionError(TxnAction.ABORT, "CONCURRENT_TRANSACTIONS")]
    h.run()
    assert "abort" in h.fake.calls
    assert_one_output_each(h)
    assert [out[0] for out in outputs(h)] == [ACCEPTED, ACCEPTED, DEADLETTER]
    assert [len(decode(o.value)) for o in h.fake.topic_outputs(DEDUPE)] == [2]  # only the committed retry's


def test_a_failed_commit_drops_what_was_routed_ahead() -> None:
    """Sub-batch 2 was routed (its pending entries made) while sub-batch 1's commit failed:
    both are read again, and the resend in sub-batch 2 is still caught exactly once."""
    h = dedupe_harness({0: [1, 2, 3, 1]}, batch=2, pipeline=2)
    h.fake.fail["commit"] = [SessionError(TxnAction.ABORT, "CONCURRENT_TRANSACTIONS")]
    h.run()
    assert_one_output_each(h)
    by_source = {out[2]: out for out in outputs(h)}
    duplicate_of(h, by_source[(0, 3)], (0, 0))
    assert sum(len(decode(o.value)) for o in h.fake.topic_outputs(DEDUPE)) == 3


@pytest.mark.parametrize("landed", [False, True], ids=["not-committed", "committed"])
def test_ambiguous_commit_keeps_the_entries_only_if_it_landed(landed: bool) -> None:
    h = dedupe_harness({0: [1, 2, 3, 1]}, batch=3, pipeline=1)
    timeout = SessionError(TxnAction.RECREATE, "_TIMED_OUT: commit")
    h.fake.fail["commit"] = [(timeout, LANDED) if landed else timeout]
    h.run()
    assert_one_output_each(h)
    by_source = {out[2]: out for out in outputs(h)}
    duplicate_of(h, by_source[(0, 3)], (0, 0))


def test_revoke_forgets_and_assign_restores_from_the_changelog() -> None:
    h = dedupe_harness({0: [1, 2, 3, 4, 1]}, batch=2, pipeline=1)
    # After the first transaction (records 0-1) committed: partition 0 moves away and back.
    def rebalance(n: int) -> None:
        if h.fake.committed.get((RAW, 0)) == 2 and h.changelog.restored.count(0) == 1:
            h.fake.revoke({(RAW, 0)})
            assert h.proc._dedupe.store.size(0) == 0  # forgotten  # noqa: SLF001
            h.fake.assign({(RAW, 0)})

    h.fake.consume_hook = rebalance
    h.run()
    assert h.changelog.restored.count(0) == 2  # at start, and on the new assignment
    assert_one_output_each(h)
    by_source = {out[2]: out for out in outputs(h)}
    duplicate_of(h, by_source[(0, 4)], (0, 0))


def test_a_new_instance_restores_what_the_previous_one_committed() -> None:
    first = dedupe_harness({0: [1, 2]})
    first.run()
    second = dedupe_harness({})
    second.fake.records = first.fake.records
    second.fake.add(RAW, 0, [(message(2), headers()), (message(5), headers())])
    second.fake.committed = dict(first.fake.committed)
    second.fake.outputs = list(first.fake.outputs)
    second.n = 4
    second.run()
    assert 0 in second.changelog.restored
    assert_one_output_each(second)
    by_source = {out[2]: out for out in outputs(second)}
    duplicate_of(second, by_source[(0, 2)], (0, 1))
    assert by_source[(0, 3)][0] == ACCEPTED


def test_a_restore_that_fails_is_fatal() -> None:
    """Without its state a partition cannot be routed safely: exit 1 (restarted), nothing routed."""
    from processor.errors import KafkaUnavailable
    from processor.stream import StreamFatalError

    h = dedupe_harness({0: [1]})

    def unreachable(partition: int):  # type: ignore[no-untyped-def]
        raise KafkaUnavailable("restore of t.raw.dedupe[0] did not reach offset 10 (at 3) within 70 s")
        yield

    h.changelog.read = unreachable  # type: ignore[method-assign]
    with pytest.raises(StreamFatalError, match="dedupe restore failed"):
        h.run()
    assert h.fake.outputs == [] and not h.proc.live()


def test_no_changelog_topic_refuses_to_start() -> None:
    """The changelog is checked before anything is consumed: exit 2 (ConfigError), one line."""
    from processor.errors import ConfigError

    h = dedupe_harness({0: [1]})

    def missing() -> None:
        raise ConfigError("the dedupe changelog t.raw.dedupe does not exist: run `hl7-processor topics create`")

    h.changelog.check = missing  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="topics create"):
        h.run()
    assert "start" not in h.fake.calls and h.fake.outputs == []


def test_an_accepted_output_refused_as_too_large_is_not_remembered() -> None:
    """Its payload-less dead letter replaces it: not accepted, so neither in the changelog nor
    a reason to call the same message a DUPLICATE later (once the limit is raised)."""
    h = dedupe_harness({})
    big = message(1, 3000)
    h.fake.add(RAW, 0, [(big, headers()), (message(2), headers()), (big, headers())])
    h.n = 3
    h.fake.producer_limit = 2000
    h.run()
    assert_one_output_each(h)
    assert [(out[0], out[1]) for out in outputs(h)] == [
        (DEADLETTER, "PROCESSING_ERROR"), (ACCEPTED, ""), (DEADLETTER, "PROCESSING_ERROR")]
    log = [e for o in h.fake.topic_outputs(DEDUPE) for e in decode(o.value)]
    assert len(log) == 1 and log[0].accepted_offset >= 0  # message 2 only
    assert h.proc._dedupe.store.size(0) == 1


def test_offsets_are_sent_before_the_flush_and_the_changelog_record() -> None:
    # send_offsets' round trips overlap the outputs' acks; the flush after it makes every
    # accepted offset known for the changelog record, which is produced last, then commit.
    h = dedupe_harness({0: [1, 2, 3]}, batch=3, pipeline=1)
    h.run()
    first = h.fake.calls.index("begin")
    assert h.fake.calls[first:first + 9] == [  # the fake's commit flushes first, as librdkafka's does
        "begin", "produce", "produce", "produce", "send_offsets", "flush", "produce", "flush", "commit"
    ]
    assert [o.topic for o in h.fake.outputs][-1] == DEDUPE


def test_partition_counts_are_checked_again_when_partitions_are_assigned() -> None:
    """At start the raw topic may not exist yet (the check has nothing to compare) and
    partitions may be added to it later: a changelog that no longer matches stops the
    processor at assignment (exit 1, with the reason), before anything is routed."""
    from processor.errors import ConfigError
    from processor.stream import StreamFatalError

    h = dedupe_harness({0: [1]})
    checks: list[str] = []

    def check() -> None:
        checks.append("check")
        if len(checks) > 1:  # the start passed; by the assignment the raw topic has grown
            raise ConfigError("the dedupe changelog t.raw.dedupe has 2 partitions, t.raw has 3: they must be equal")

    h.changelog.check = check  # type: ignore[method-assign]
    with pytest.raises(StreamFatalError, match="dedupe restore failed: the dedupe changelog"):
        h.run()
    assert checks == ["check", "check"]
    assert h.fake.outputs == [] and h.changelog.restored == []
