"""Decision row 12's store (pure): what is a duplicate, pending vs committed, window, bound, restore."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.stream.dedupe import (
    UNKNOWN_OFFSET,
    DedupeStore,
    Duplicate,
    Entry,
    Fresh,
    Identity,
    identity,
)
from processor.stream.dedupe_codec import ENTRY_BYTES, decode, encode, record_key

DAY_US = 86_400 * 1_000_000
WINDOW = 7 * DAY_US
T0 = 1_700_000_000_000_000


def ident(
    control_id: str = "C1",
    payload: bytes = b"MSH|^~\\&|A|trustalias{trustalias}|...",
    *,
    principal: str = "mailco",
    msh4: str = "trustalias{trustalias}",
    at: int = T0,
) -> Identity:
    return identity(principal, msh4, control_id, payload, received_at_us=at, ingest_id=str(uuid.uuid4()))


def accept(store: DedupeStore, partition: int, i: Identity, token: int = 1, where: tuple[int, int] = (0, 7)) -> None:
    pend = store.pending(partition, i, token)
    store.delivered(pend, *where)


# ------------------------------------------------------------------ what a duplicate is


def test_identity_hashes_all_four_parts_and_nothing_else() -> None:
    base = ident()
    same = ident()  # another ingest id, another edge: same message
    assert same.key == base.key and same.control == base.control
    for other in (
        ident(principal="otherco"),
        ident(msh4="trustalias{other}"),
        ident(control_id="C2"),
    ):
        assert other.key != base.key and other.control != base.control
    changed = ident(payload=b"MSH|^~\\&|A|trustalias{trustalias}|...changed")
    assert changed.key != base.key and changed.control == base.control
    # Length-prefixed parts: moving a character between parts changes the hash.
    assert ident(principal="ab", msh4="c").key != ident(principal="a", msh4="bc").key
    assert len(base.key) == len(base.control) == 16


def test_first_is_fresh_resend_is_a_duplicate_naming_the_original() -> None:
    store = DedupeStore(WINDOW, 100)
    first = ident()
    assert store.check(0, first) == Fresh(False)
    accept(store, 0, first, where=(2, 41))
    store.commit(1, T0)
    verdict = store.check(0, ident(at=T0 + DAY_US))
    assert isinstance(verdict, Duplicate)
    assert verdict.original.ingest_id == str(uuid.UUID(bytes=first.ingest_id))
    assert (verdict.original.accepted_partition, verdict.original.accepted_offset) == (2, 41)
    assert verdict.original.received_at_us == T0


def test_same_control_id_other_payload_is_fresh_and_reused() -> None:
    store = DedupeStore(WINDOW, 100)
    accept(store, 0, ident())
    store.commit(1, T0)
    assert store.check(0, ident(payload=b"other")) == Fresh(True)
    assert store.check(0, ident(control_id="C9", payload=b"other")) == Fresh(False)


def test_withdrawing_a_later_reuse_keeps_the_earlier_pending_control_id() -> None:
    store = DedupeStore(WINDOW, 100)
    store.admit(0, ident(payload=b"first"), 1)
    later = store.admit(0, ident(payload=b"second", at=T0 + 1), 1)
    assert not isinstance(later, Duplicate) and later.reused
    store.withdraw(0, later)  # refused as too large: not accepted after all
    assert store.check(0, ident(payload=b"third", at=T0 + 2)) == Fresh(True)  # "first" still counts


def test_state_is_per_partition() -> None:
    store = DedupeStore(WINDOW, 100)
    accept(store, 0, ident())
    store.commit(1, T0)
    assert store.check(1, ident()) == Fresh(False)


# ------------------------------------------------------------------ pending entries


def test_pending_entries_are_seen_before_commit() -> None:
    store = DedupeStore(WINDOW, 100)
    pend = store.pending(0, ident(), token=1)
    verdict = store.check(0, ident())
    assert isinstance(verdict, Duplicate) and verdict.original.accepted_offset == UNKNOWN_OFFSET
    store.delivered(pend, 0, 3)
    verdict = store.check(0, ident())
    assert isinstance(verdict, Duplicate) and verdict.original.accepted_offset == 3
    assert store.check(0, ident(payload=b"x")) == Fresh(True)


def test_discard_forgets_every_pending_entry() -> None:
    store = DedupeStore(WINDOW, 100)
    accept(store, 0, ident("A"), token=1)
    accept(store, 0, ident("B"), token=2)
    store.discard()
    assert store.check(0, ident("A")) == Fresh(False) and store.check(0, ident("B")) == Fresh(False)
    store.commit(1, T0)  # nothing left to commit
    assert store.size(0) == 0


def test_commit_makes_only_its_own_token_permanent() -> None:
    store = DedupeStore(WINDOW, 100)
    accept(store, 0, ident("A"), token=1)
    accept(store, 0, ident("B"), token=2)
    assert [e.key for _p, e in store.pending_entries(1)] == [ident("A").key]
    store.commit(1, T0)
    assert store.size(0) == 1
    store.discard()  # token 2 aborted
    assert isinstance(store.check(0, ident("A")), Duplicate)
    assert store.check(0, ident("B")) == Fresh(False)


def test_commit_after_revoke_keeps_nothing_for_the_revoked_partition() -> None:
    store = DedupeStore(WINDOW, 100)
    accept(store, 3, ident(), token=1)
    store.forget([3])
    store.commit(1, T0)
    assert 3 not in store.partitions and store.check(3, ident()) == Fresh(False)


# ------------------------------------------------------------------ window and bound


def test_resend_after_the_window_is_fresh_and_replaces_the_entry() -> None:
    store = DedupeStore(WINDOW, 100)
    accept(store, 0, ident())
    store.commit(1, T0)
    late = ident(at=T0 + WINDOW + 1)
    assert store.check(0, ident(at=T0 + WINDOW)) != Fresh(False)  # the edge of the window counts
    assert store.check(0, late) == Fresh(False)
    accept(store, 0, late, token=2, where=(0, 99))
    store.commit(2, T0 + WINDOW + 1)
    verdict = store.check(0, ident(at=T0 + WINDOW + 2))
    assert isinstance(verdict, Duplicate) and verdict.original.accepted_offset == 99
    assert store.size(0) == 1


def test_old_entries_leave_memory_by_stream_time_capped_by_the_wall_clock() -> None:
    store = DedupeStore(WINDOW, 100)
    accept(store, 0, ident("old"), token=1)
    store.commit(1, T0)
    accept(store, 0, ident("new", at=T0 + WINDOW + 5), token=2)
    store.commit(2, now_us=T0)  # wall clock behind the stream time: nothing expires yet
    assert store.size(0) == 2
    store.expire(T0 + WINDOW + 5)
    assert store.size(0) == 1 and store.check(0, ident("old", at=T0)) == Fresh(False)


def test_bound_evicts_the_oldest_and_counts_them() -> None:
    store = DedupeStore(WINDOW, 3)
    evicted = 0
    for i in range(5):
        accept(store, 0, ident(f"C{i}", at=T0 + i), token=i)
        evicted += store.commit(i, T0)
    assert evicted == 2 and store.size(0) == 3
    assert store.check(0, ident("C0", at=T0 + 10)) == Fresh(False)
    assert isinstance(store.check(0, ident("C4", at=T0 + 10)), Duplicate)


# ------------------------------------------------------------------ changelog and restore


def test_codec_round_trip_and_refusals() -> None:
    entries = [Entry(i.key, i.control, i.received_at_us, i.ingest_id, 4, 123_456_789_012 + n)
               for n, i in enumerate([ident("A"), ident("B"), ident("C")])]
    value = encode(entries)
    assert len(value) == 1 + 3 * ENTRY_BYTES == 205 and value[0] == 1
    assert decode(value) == entries
    assert decode(encode([])) == [] and decode(None) == []  # empty, tombstone
    assert decode(b"\x02" + value[1:]) is None  # a later version
    assert decode(value[:-1]) is None and decode(b"") is None
    assert record_key(3, entries[0]) == b"3@" + entries[0].ingest_id.hex().encode()


def test_restore_rebuilds_what_was_committed() -> None:
    store = DedupeStore(WINDOW, 100)
    records: list[bytes] = []
    for n, control_id in enumerate(("A", "B", "C")):
        accept(store, 0, ident(control_id, at=T0 + n), token=n, where=(1, n))
        records.append(encode(e for _p, e in store.pending_entries(n)))
        store.commit(n, T0)
    fresh = DedupeStore(WINDOW, 100)
    assert fresh.restore(0, [e for r in records for e in decode(r) or ()], T0) == 0
    verdict = fresh.check(0, ident("C"))
    assert isinstance(verdict, Duplicate) and verdict.original.accepted_offset == 2
    assert verdict.original.ingest_id == str(uuid.UUID(bytes=decode(records[2])[0].ingest_id))
    assert fresh.check(0, ident("A", payload=b"z")) == Fresh(True)
    assert fresh.size(0) == 3


def test_restore_applies_the_bound_and_the_window() -> None:
    entries = [
        Entry(ident(f"C{n}").key, ident(f"C{n}").control, T0 + n * DAY_US, uuid.uuid4().bytes, 0, n)
        for n in range(10)
    ]
    store = DedupeStore(WINDOW, 5)
    assert store.restore(0, entries, now_us=T0 + 20 * DAY_US) == 5
    assert store.size(0) == 5  # the newest five (days 5..9)
    store2 = DedupeStore(WINDOW, 100)
    store2.restore(0, entries, now_us=T0 + 9 * DAY_US)
    assert store2.size(0) == 8  # days 2..9


# ------------------------------------------------------------------ a model


_ops = st.lists(
    st.tuples(
        st.sampled_from(["send", "commit", "abort"]),
        st.integers(0, 5),  # control id
        st.integers(0, 1),  # payload variant
        st.integers(0, 3),  # days later
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_store_agrees_with_a_plain_model(ops: list[tuple[str, int, int, int]]) -> None:
    """Against a list of every committed acceptance: a message is a duplicate iff an accepted
    (committed, or pending in the open transaction) record with the same key lies within the
    window; control-id reuse iff one with the same control id does."""
    store = DedupeStore(2 * DAY_US, 1000)
    committed: list[tuple[bytes, bytes, int]] = []
    pending: list[tuple[bytes, bytes, int]] = []
    token, now = 1, T0
    for op, control_id, variant, later in ops:
        if op == "commit":
            committed += pending
            pending = []
            store.commit(token, now)
            token += 1
            continue
        if op == "abort":
            pending = []
            store.discard()
            token += 1
            continue
        now += later * DAY_US
        i = ident(f"C{control_id}", b"payload %d" % variant, at=now)
        live = [(k, c) for k, c, at in committed + pending if at >= now - 2 * DAY_US]
        verdict = store.check(0, i)
        if any(k == i.key for k, _c in live):
            assert isinstance(verdict, Duplicate)
            continue
        assert verdict == Fresh(any(c == i.control for _k, c in live))
        accept(store, 0, i, token)
        pending.append((i.key, i.control, now))


def test_admit_is_check_then_pending() -> None:
    """The loop's one call per accepted record: a Duplicate, or the new pending entry."""
    from processor.stream.dedupe import Pending

    store = DedupeStore(WINDOW, 100)
    first = store.admit(0, ident(), token=1)
    assert isinstance(first, Pending) and not first.reused and store.has_pending(1)
    assert isinstance(store.admit(0, ident(), token=1), Duplicate)  # the pending one is seen
    other = store.admit(0, ident(payload=b"other"), token=1)
    assert isinstance(other, Pending) and other.reused
    store.commit(1, T0)
    assert isinstance(store.admit(0, ident(), token=2), Duplicate) and not store.has_pending(2)
