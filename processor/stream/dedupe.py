"""Decision row 12: has this message been accepted before? The dedupe store (pure, no I/O).

A raw record is a **duplicate** when, within the window (``HL7_DEDUPE_WINDOW``), an earlier
*accepted* record had the same principal, the same MSH-4 as received, the same MSH-10 and
the same SHA-256 of the payload. The same MSH-10 with a different payload is not a
duplicate (senders reuse control ids after a restart): it is accepted and reported as a
control id reuse.

Keys (:func:`identity`), all hashes, never message text:

* ``key``     = SHA-256(principal, MSH-4 as received, MSH-10, SHA-256(payload))[:16]
* ``control`` = SHA-256(principal, MSH-4 as received, MSH-10)[:16]

(each part length-prefixed, so no two different tuples hash the same input). 128 bits:
the chance that two different messages share a key among 10^9 is below 10^-20.

State is kept per partition of ``hl7.raw`` (a resend has the same Kafka key
``<principal>|<MSH-4>``, so it lands in the same partition as its original). Per
partition, two maps in acceptance order:

* ``entries``: key -> packed (received_at, accepted partition, accepted offset, ingest id);
* ``controls``: control -> received_at of the newest accepted record with that control id.

Entries of the transaction in flight are **pending**: visible to :meth:`DedupeStore.check`
(so a resend inside one batch, or in the next sub-batch, is caught) but only made
permanent by :meth:`DedupeStore.commit` once their transaction committed, and dropped by
:meth:`DedupeStore.discard` when it aborted. The loop writes each pending entry to the
changelog topic in the same transaction (:mod:`processor.stream.dedupe_codec`), and
:meth:`DedupeStore.restore` rebuilds a partition from it when the partition is assigned.

Age is measured in the edge's clock (``hl7.received_at``), so re-processing after a crash
decides exactly as the first time: a record is a duplicate when its received_at is at most
one window after the original's. Entries are dropped once older than the window before the
partition's *stream time* (the newest received_at committed there, but never later than
the wall clock: a bogus future header cannot wipe the state). Each partition holds at most
``max_entries`` entries; beyond, the oldest go first and are counted as evictions.

Not thread-safe: the loop's thread is the only caller.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple
from uuid import UUID

__all__ = [
    "Identity",
    "Original",
    "Entry",
    "Duplicate",
    "Fresh",
    "Check",
    "DedupeStore",
    "identity",
    "UNKNOWN_OFFSET",
    "Pending",
]

UNKNOWN_OFFSET = -1  # accepted partition/offset not known (delivery report not seen)
_PACKED = struct.Struct("<qiq16s")  # received_at_us, accepted partition, accepted offset, ingest id
_sha256 = hashlib.sha256


# Identity and Entry are NamedTuples, not frozen dataclasses: one of each is built per
# accepted record on the hot path, and a tuple is built several times faster.
class Identity(NamedTuple):
    """What row 12 compares, as hashes, plus what a duplicate's detail will name."""

    key: bytes  # 16 bytes
    control: bytes  # 16 bytes
    received_at_us: int
    ingest_id: bytes  # the UUID's 16 bytes


def identity(
    principal_id: str,
    sending_facility_raw: str,
    message_control_id: str,
    payload: bytes,
    *,
    received_at_us: int,
    ingest_id: str,
) -> Identity:
    """The row-12 identity of an accepted record (``ingest_id``: a UUID, checked by row 1)."""
    p = principal_id.encode("utf-8", "surrogatepass")
    f = sending_facility_raw.encode("utf-8", "surrogatepass")
    c = message_control_id.encode("utf-8", "surrogatepass")
    control = _sha256(b"%d:%s%d:%s%d:%s" % (len(p), p, len(f), f, len(c), c)).digest()[:16]
    key = _sha256(control + _sha256(payload).digest()).digest()[:16]
    return Identity(key, control, received_at_us, bytes.fromhex(ingest_id.replace("-", "")))


@dataclass(frozen=True, slots=True)
class Original:
    """The accepted record a duplicate repeats (its detail names these)."""

    ingest_id: str
    received_at_us: int
    accepted_partition: int  # UNKNOWN_OFFSET when not known
    accepted_offset: int


class Entry(NamedTuple):
    """One accepted record as the changelog stores it (:mod:`processor.stream.dedupe_codec`)."""

    key: bytes
    control: bytes
    received_at_us: int
    ingest_id: bytes
    accepted_partition: int
    accepted_offset: int

    def original(self) -> Original:
        return Original(
            str(UUID(bytes=self.ingest_id)),
            self.received_at_us,
            self.accepted_partition,
            self.accepted_offset,
        )


@dataclass(frozen=True, slots=True)
class Duplicate:
    original: Original


@dataclass(frozen=True, slots=True)
class Fresh:
    control_id_reused: bool  # an earlier accepted record had this MSH-10 with another payload


Check = Duplicate | Fresh
_FRESH = Fresh(False)
_REUSED = Fresh(True)


_NOWHERE = (UNKNOWN_OFFSET, UNKNOWN_OFFSET)


class Pending:
    """An accepted record of a transaction in flight; its delivery report fills in where it
    landed (:meth:`delivered`, possibly on the commit thread: one attribute, set at once)."""

    __slots__ = ("identity", "token", "where", "reused")

    def __init__(self, ident: Identity, token: int, reused: bool = False) -> None:
        self.identity = ident
        self.token = token
        self.where = _NOWHERE  # (accepted partition, accepted offset)
        self.reused = reused  # an earlier accepted record had its MSH-10 with another payload

    def delivered(self, accepted_partition: int, accepted_offset: int) -> None:
        self.where = (accepted_partition, accepted_offset)

    @property
    def accepted_offset(self) -> int:
        return self.where[1]

    def entry(self) -> Entry:
        key, control, received_at_us, ingest_id = self.identity
        return Entry(key, control, received_at_us, ingest_id, *self.where)


@dataclass
class _Partition:
    entries: OrderedDict[bytes, bytes] = field(default_factory=OrderedDict)
    controls: OrderedDict[bytes, int] = field(default_factory=OrderedDict)
    pending: dict[bytes, Pending] = field(default_factory=dict)
    pending_controls: dict[bytes, int] = field(default_factory=dict)
    stream_time_us: int = 0


class DedupeStore:
    """Row-12 state of the partitions this processor owns (see the module docstring)."""

    def __init__(self, window_us: int, max_entries: int) -> None:
        if window_us <= 0 or max_entries <= 0:
            raise ValueError("window and max_entries must be positive")
        self.window_us = window_us
        self.max_entries = max_entries
        self._parts: dict[int, _Partition] = {}
        self._tokens: dict[int, list[tuple[int, Pending]]] = {}

    # ------------------------------------------------------------------ lookups
    def check(self, partition: int, ident: Identity) -> Check:
        """Row 12 for an accepted record of ``partition`` (pending entries included)."""
        part = self._parts.get(partition)
        if part is None:
            return _FRESH
        found = self._lookup(part, ident)
        if isinstance(found, Duplicate):
            return found
        return _REUSED if found else _FRESH

    def admit(self, partition: int, ident: Identity, token: int) -> Duplicate | Pending:
        """:meth:`check` and, unless a duplicate, :meth:`pending` in one call (the hot path)."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        found = self._lookup(part, ident)
        if isinstance(found, Duplicate):
            return found
        return self._remember(partition, part, ident, token, reused=found)

    def pending(self, partition: int, ident: Identity, token: int) -> Pending:
        """Remember ``ident`` as accepted in the transaction ``token`` (not yet committed).

        Returns the pending entry; :meth:`Pending.delivered` fills in where the accepted
        record landed.
        """
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        return self._remember(partition, part, ident, token, reused=False)

    def _lookup(self, part: _Partition, ident: Identity) -> Duplicate | bool:
        """The original ``ident`` repeats within the window, else whether its control id
        (principal, MSH-4, MSH-10) was accepted within the window with another payload."""
        key, control, received_at_us, _ingest = ident
        horizon = received_at_us - self.window_us
        pending = part.pending.get(key)
        if pending is not None and pending.identity.received_at_us >= horizon:
            return Duplicate(pending.entry().original())
        packed = part.entries.get(key)
        if packed is not None:
            received, acc_partition, acc_offset, ingest = _PACKED.unpack(packed)
            if received >= horizon:
                return Duplicate(Original(str(UUID(bytes=ingest)), received, acc_partition, acc_offset))
        seen = part.pending_controls.get(control)
        if seen is None:
            seen = part.controls.get(control)
        return seen is not None and seen >= horizon

    def _remember(
        self, partition: int, part: _Partition, ident: Identity, token: int, *, reused: bool
    ) -> Pending:
        entry = Pending(ident, token, reused)
        part.pending[ident.key] = entry
        part.pending_controls[ident.control] = ident.received_at_us
        items = self._tokens.get(token)
        if items is None:
            items = self._tokens[token] = []
        items.append((partition, entry))
        return entry

    def in_flight(self, partition: int, key: bytes) -> Pending | None:
        """The pending entry of ``key``, if its transaction is still in flight."""
        part = self._parts.get(partition)
        return part.pending.get(key) if part is not None else None

    @staticmethod
    def delivered(entry: Pending, accepted_partition: int, accepted_offset: int) -> None:
        entry.delivered(accepted_partition, accepted_offset)

    def withdraw(self, partition: int, entry: Pending) -> None:
        """The record was not accepted after all (its output became a dead letter)."""
        part = self._parts.get(partition)
        if part is not None and part.pending.get(entry.identity.key) is entry:
            del part.pending[entry.identity.key]
            control = entry.identity.control
            if part.pending_controls.pop(control, None) is not None:  # rare: rebuild from the rest
                rest = [
                    p.identity.received_at_us for p in part.pending.values() if p.identity.control == control
                ]
                if rest:
                    part.pending_controls[control] = max(rest)
        items = self._tokens.get(entry.token)
        if items is not None:
            self._tokens[entry.token] = [(p, e) for p, e in items if e is not entry]

    def has_pending(self, token: int) -> bool:
        return bool(self._tokens.get(token))

    def pending_entries(self, token: int) -> list[tuple[int, Entry]]:
        """(raw partition, entry) of every pending entry of ``token``: the changelog records."""
        return [(p, e.entry()) for p, e in self._tokens.get(token, ())]

    # ------------------------------------------------------------------ transaction outcome
    def commit(self, token: int, now_us: int) -> int:
        """The transaction ``token`` committed: its pending entries become permanent.

        Returns the number of entries evicted by the per-partition bound.
        """
        evicted = 0
        parts, pack, limit = self._parts, _PACKED.pack, self.max_entries
        for partition, pend in self._tokens.pop(token, ()):
            part = parts.get(partition)
            if part is None:  # revoked meanwhile: the new owner restores it from the changelog
                continue
            key, control, received_at_us, ingest_id = pend.identity
            pending, pending_controls = part.pending, part.pending_controls
            if pending.get(key) is pend:
                del pending[key]
            if pending_controls.get(control) == received_at_us:
                del pending_controls[control]
            # _put, inlined (one per accepted record)
            entries, controls = part.entries, part.controls
            if key in entries:
                del entries[key]
            entries[key] = pack(received_at_us, *pend.where, ingest_id)
            seen = controls.pop(control, None)
            controls[control] = received_at_us if seen is None or seen < received_at_us else seen
            if received_at_us > part.stream_time_us:
                part.stream_time_us = received_at_us
            if len(entries) > limit or len(controls) > limit:
                evicted += self._bound(part)
        self.expire(now_us)
        return evicted

    def discard(self) -> None:
        """Every transaction in flight aborted (or its outcome was settled as aborted)."""
        self._tokens.clear()
        for part in self._parts.values():
            part.pending.clear()
            part.pending_controls.clear()

    # ------------------------------------------------------------------ partitions
    def restore(self, partition: int, entries: Iterable[Entry], now_us: int) -> int:
        """Rebuild ``partition`` from its changelog entries, in log order; returns the evictions."""
        part = _Partition()
        self._parts[partition] = part
        evicted = 0
        put = self._put
        for entry in entries:
            evicted += put(part, entry)
        self._expire(part, now_us)
        return evicted

    def forget(self, partitions: Iterable[int]) -> None:
        """The partitions were revoked or lost: their new owner restores them."""
        gone = set(partitions)
        for partition in gone:
            self._parts.pop(partition, None)
        for token, items in self._tokens.items():
            self._tokens[token] = [(p, e) for p, e in items if p not in gone]

    def size(self, partition: int) -> int:
        part = self._parts.get(partition)
        return len(part.entries) if part is not None else 0

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._parts)

    # ------------------------------------------------------------------ age and bound
    def expire(self, now_us: int) -> None:
        """Drop committed entries older than the window before each partition's stream time."""
        for part in self._parts.values():
            self._expire(part, now_us)

    def _expire(self, part: _Partition, now_us: int) -> None:
        horizon = min(part.stream_time_us, now_us) - self.window_us
        entries, controls = part.entries, part.controls
        # Acceptance order is nearly received_at order (edges' clocks differ a little): stop at
        # the first young entry; an older one behind it goes a little later (check() still
        # compares received_at, so this never changes a decision, only memory).
        while entries:
            key = next(iter(entries))
            if _PACKED.unpack(entries[key])[0] >= horizon:
                break
            entries.popitem(last=False)
        while controls:
            control = next(iter(controls))
            if controls[control] >= horizon:
                break
            controls.popitem(last=False)

    def _put(self, part: _Partition, entry: Entry) -> int:
        key, control, received_at_us, ingest_id, acc_partition, acc_offset = entry
        entries, controls = part.entries, part.controls
        if key in entries:  # accepted again after its window: the newer one counts
            del entries[key]
        entries[key] = _PACKED.pack(received_at_us, acc_partition, acc_offset, ingest_id)
        seen = controls.pop(control, None)
        controls[control] = received_at_us if seen is None or seen < received_at_us else seen
        if received_at_us > part.stream_time_us:
            part.stream_time_us = received_at_us
        if len(entries) <= self.max_entries and len(controls) <= self.max_entries:
            return 0
        return self._bound(part)

    def _bound(self, part: _Partition) -> int:
        """Oldest first: drop entries beyond ``max_entries``; returns how many."""
        entries, controls, limit = part.entries, part.controls, self.max_entries
        evicted = 0
        while len(entries) > limit:
            entries.popitem(last=False)
            evicted += 1
        while len(controls) > limit:
            controls.popitem(last=False)
        return evicted
