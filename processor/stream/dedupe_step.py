"""Decision row 12 in the loop: the dedupe store, its changelog and its metrics.

The loop (:mod:`processor.stream.processor`) calls, in this order:

* :meth:`DedupeStep.check` after routing each record of transaction ``token``: an accepted
  output whose message was accepted before (committed, or pending in a transaction in
  flight) becomes a ``DUPLICATE`` dead letter; otherwise its entry is pending under ``token``;
* :meth:`DedupeStep.resolve` / :meth:`DedupeStep.take_accepted` while producing: a
  DUPLICATE of a record accepted in the same transaction learns that record's offset
  (one ``flush`` if its delivery report is not in yet), an accepted record's delivery
  report fills in its own;
* :meth:`DedupeStep.write_changelog` after the outputs and ``send_offsets``: one ``flush``
  (every accepted record's partition and offset is then known; the outputs' acks arrive
  while ``send_offsets`` waits for its own round trips) and one changelog record per raw
  partition holding its pending entries, in the same transaction;
* :meth:`DedupeStep.committed` when the transaction committed (entries become permanent,
  metrics counted), :meth:`DedupeStep.aborted` when it did not (every pending entry of every
  transaction in flight is forgotten: the consumer rewinds and routes them again);
* :meth:`DedupeStep.restore` when partitions are assigned and :meth:`DedupeStep.forget`
  when they are revoked or lost (rebalance callbacks: no transaction is open then).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, cast

from confluent_kafka import KafkaException, Message

from processor.config import Settings
from processor.errors import GatewayError, SessionError
from processor.hl7.header import MshHeader
from processor.metrics import (
    PROCESSOR_CONTROL_ID_REUSED,
    PROCESSOR_DEDUPE_ENTRIES,
    PROCESSOR_DEDUPE_EVICTIONS,
    PROCESSOR_DEDUPE_RESTORE,
)
from processor.registry.model import Registry
from processor.stream.dedupe import UNKNOWN_OFFSET, DedupeStore, Entry, Original, Pending
from processor.stream.dedupe_codec import MAX_ENTRIES_PER_RECORD, encode, record_key
from processor.stream.records import raw_record
from processor.stream.routing import Encoder, Routed, Topics, duplicate_dead_letter
from processor.stream.txn_errors import TxnAction, error_name

__all__ = ["DedupeStep", "NoDedupe", "ChangelogSource"]

log = logging.getLogger(__name__)

Source = tuple[int, int]  # (raw partition, offset): one raw topic
_Waiting = tuple[Pending, MshHeader | None]  # the original in flight, the resend's MSH


class ChangelogSource(Protocol):
    """Where restore reads from (:class:`processor.kafka.changelog.ChangelogReader`)."""

    def check(self) -> None: ...
    def read(self, partition: int) -> Iterator[Entry]: ...
    def close(self) -> None: ...


class _Writer(Protocol):
    def flush(self) -> None: ...
    def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list, *, partition: int | None = None
    ) -> None: ...


class DedupeStep:
    """Row 12 for the partitions this processor owns (one thread: the loop's)."""

    def __init__(self, settings: Settings, topics: Topics, changelog: ChangelogSource) -> None:
        self._store = DedupeStore(settings.dedupe_window * 1_000_000, settings.dedupe_max_entries)
        self._topic = settings.dedupe_topic
        self._topics = topics
        self._changelog = changelog
        self._accepted: dict[Source, Pending] = {}  # accepted outputs not yet produced
        self._duplicates: dict[Source, _Waiting] = {}  # DUPLICATEs of a record in flight
        self._reused: dict[int, Counter[str]] = {}  # per token: control id reuse by principal

    def start(self) -> None:
        """``ConfigError`` unless the changelog exists with the raw topic's partition count."""
        self._changelog.check()

    def close(self) -> None:
        self._changelog.close()

    # ------------------------------------------------------------------ routing
    def check(
        self, msg: Message, out: Routed, registry: Registry, now_us: int, encode: Encoder, token: int
    ) -> Routed:
        """Row 12 for ``out`` (the routed output of ``msg`` in transaction ``token``)."""
        ident = out.identity
        if ident is None:
            return out  # not accepted: nothing to compare
        partition: int = msg.partition()  # type: ignore[assignment]
        source: Source = (partition, msg.offset())  # type: ignore[assignment]
        got = self._store.admit(partition, ident, token)
        if isinstance(got, Pending):  # fresh: remembered as pending in transaction ``token``
            if got.reused:
                self._reused.setdefault(token, Counter())[out.principal] += 1
            self._accepted[source] = got
            return out
        original = got.original
        in_flight = self._store.in_flight(partition, ident.key)
        if in_flight is not None and original.accepted_offset == UNKNOWN_OFFSET:
            self._duplicates[source] = (in_flight, out.header)  # resolve() names its offset once known
        return self._duplicate(msg, out, registry, original, out.header, now_us, encode)

    # ------------------------------------------------------------------ producing
    def resolve(
        self,
        msg: Message,
        out: Routed,
        registry: Registry,
        now_us: int,
        encode: Encoder,
        flush: Callable[[], None],
    ) -> Routed:
        """A DUPLICATE routed before its original's offset was known gets it now."""
        if not self._duplicates:  # the usual case: no resend in flight
            return out
        waiting = self._duplicates.pop((msg.partition(), msg.offset()), None)  # type: ignore[arg-type]
        if waiting is None:
            return out
        pend, header = waiting
        if pend.accepted_offset == UNKNOWN_OFFSET:
            flush()  # the original was produced earlier in this transaction
        return self._duplicate(msg, out, registry, pend.entry().original(), header, now_us, encode)

    def _duplicate(
        self,
        msg: Message,
        out: Routed,
        registry: Registry,
        original: Original,
        header: MshHeader | None,
        now_us: int,
        encode: Encoder,
    ) -> Routed:
        """``msg``'s DUPLICATE dead letter (instead of ``out``), naming ``original``."""
        return duplicate_dead_letter(
            raw_record(msg, out.headers),
            registry,
            original=original,
            header=header,
            now_us=now_us,
            topics=self._topics,
            encode=encode,
            kafka_headers=out.headers,
        )

    def take_accepted(self, msg: Message) -> Pending | None:
        """The pending entry of ``msg``'s accepted output, taken as it is produced (``None`` for
        other outputs); its :meth:`Pending.delivered` is the delivery callback."""
        return self._accepted.pop((msg.partition(), msg.offset()), None)  # type: ignore[arg-type]

    def not_accepted(self, msg: Message, pend: Pending) -> None:
        """``msg``'s accepted output was replaced by a dead letter (refused as too large)."""
        self._store.withdraw(cast(int, msg.partition()), pend)

    def write_changelog(self, session: _Writer, token: int) -> None:
        """Flush (the accepted records' offsets are then known), then the entries of ``token``:
        one changelog record per raw partition, to the changelog partition of that number."""
        if not self._store.has_pending(token):
            return
        session.flush()  # delivery reports: every accepted record's partition and offset
        by_partition: dict[int, list[Entry]] = {}
        for partition, entry in self._store.pending_entries(token):
            by_partition.setdefault(partition, []).append(entry)
        for partition, entries in by_partition.items():
            for i in range(0, len(entries), MAX_ENTRIES_PER_RECORD):
                chunk = entries[i : i + MAX_ENTRIES_PER_RECORD]
                session.produce(
                    self._topic, encode(chunk), record_key(partition, chunk[0]), [], partition=partition
                )

    # ------------------------------------------------------------------ outcome
    def committed(self, token: int, partitions: Iterable[int]) -> None:
        evicted = self._store.commit(token, time.time_ns() // 1000)
        if evicted:
            PROCESSOR_DEDUPE_EVICTIONS.inc(evicted)
        for principal, n in self._reused.pop(token, Counter()).items():
            PROCESSOR_CONTROL_ID_REUSED.labels(principal=principal).inc(n)
        for partition in set(partitions):
            PROCESSOR_DEDUPE_ENTRIES.labels(partition=str(partition)).set(self._store.size(partition))

    def aborted(self) -> None:
        self._store.discard()
        self._accepted.clear()
        self._duplicates.clear()
        self._reused.clear()

    # ------------------------------------------------------------------ rebalance
    def restore(self, partitions: Iterable[int]) -> None:
        """Each partition's state from its changelog. Without it a partition cannot be routed
        safely: a failure is a fatal ``SessionError`` (the process exits 1 and is restarted).

        The partition counts are checked again first: at start the raw topic may not have
        existed yet (nothing to compare), and partitions may have been added to it since."""
        try:
            self._changelog.check()
        except GatewayError as exc:
            raise SessionError(TxnAction.FATAL, f"dedupe restore failed: {exc}") from exc
        for partition in sorted(partitions):
            started = time.monotonic()
            try:
                evicted = self._store.restore(
                    partition, self._changelog.read(partition), time.time_ns() // 1000
                )
            except GatewayError as exc:
                raise SessionError(TxnAction.FATAL, f"dedupe restore failed: {exc}") from exc
            except KafkaException as exc:
                raise SessionError(TxnAction.FATAL, f"dedupe restore failed: {error_name(exc)}") from exc
            took = time.monotonic() - started
            PROCESSOR_DEDUPE_RESTORE.observe(took)
            PROCESSOR_DEDUPE_ENTRIES.labels(partition=str(partition)).set(self._store.size(partition))
            if evicted:
                PROCESSOR_DEDUPE_EVICTIONS.inc(evicted)
            log.info(
                "dedupe state of partition %d restored: %d entries in %.2f s",
                partition,
                self._store.size(partition),
                took,
            )

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        self._store.forget(gone)
        for partition in gone:
            try:
                PROCESSOR_DEDUPE_ENTRIES.remove(str(partition))
            except KeyError:
                pass

    @property
    def store(self) -> DedupeStore:
        return self._store


class NoDedupe:
    """``HL7_DEDUPE_ENABLED=false``: row 12 is not evaluated; every call does nothing."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def check(
        self, msg: Message, out: Routed, registry: Registry, now_us: int, encode: Encoder, token: int
    ) -> Routed:
        return out

    def resolve(
        self,
        msg: Message,
        out: Routed,
        registry: Registry,
        now_us: int,
        encode: Encoder,
        flush: Callable[[], None],
    ) -> Routed:
        return out

    def take_accepted(self, msg: Message) -> None:
        return None

    def not_accepted(self, msg: Message, pend: Pending) -> None:
        pass

    def write_changelog(self, session: _Writer, token: int) -> None:
        pass

    def committed(self, token: int, partitions: Iterable[int]) -> None:
        pass

    def aborted(self) -> None:
        pass

    def restore(self, partitions: Iterable[int]) -> None:
        pass

    def forget(self, partitions: Iterable[int]) -> None:
        pass
