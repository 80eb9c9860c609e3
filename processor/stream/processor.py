"""The exactly-once processor: read ``hl7.raw``, route each record once, commit per batch.

The loop reads like confluent-kafka's exactly-once example (``eos-transactions.py``):
collect a batch, route it with the pure :func:`processor.stream.routing.route`,
``begin`` / ``produce`` every output / ``send_offsets`` (with the consumer's group
metadata, KIP-447) / ``commit``; on failure abort (or replace the producer) and rewind
to the committed offsets. Kafka itself lives in :mod:`processor.kafka.session`; what to
do with an output Kafka refuses as too large in :mod:`processor.stream.oversize`.

Loop shape, chosen because confluent-kafka runs rebalance callbacks *inside*
``poll``/``consume``: a batch is first collected (no transaction open), then produced and
committed with no ``poll``/``consume`` in between. A revocation can therefore only arrive
while no transaction is open, and the callback simply drops the buffered records of the
revoked partitions; their new owner re-reads them from the committed offsets.

Decision row 12 (a resend of an accepted message is a ``DUPLICATE``) needs state: it lives
in :mod:`processor.stream.dedupe_step`, which the loop calls after routing (check), while
producing (delivery reports), after ``send_offsets`` (the changelog records, same
transaction), after the outcome (commit or forget pending entries) and in the rebalance
callbacks (restore on assignment, forget on revocation).

Failures (docs/stream.md, "Failure handling"): record content never aborts a transaction
(it becomes a dead letter); an abortable error aborts and rewinds; an ambiguous one
replaces the producer (same ``transactional.id``, which fences the old one) and rewinds;
a fatal one (fenced) raises :class:`StreamFatalError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from confluent_kafka import Message, Producer

from processor.config import Settings
from processor.errors import ConfigError, SessionError, SessionStopped, StreamFatalError
from processor.health import Readiness
from processor.kafka.changelog import ChangelogReader
from processor.kafka.session import Offsets, Partition, Session, TxnSession
from processor.metrics import PROCESSOR_END_TO_END, PROCESSOR_RECORDS, PROCESSOR_TRANSACTIONS
from processor.registry.model import Registry
from processor.stream.dedupe_step import ChangelogSource, DedupeStep, NoDedupe
from processor.stream.oversize import OversizePolicy
from processor.stream.records import bare_raw_record, coords, end_offsets, kafka_headers, raw_record
from processor.stream.routing import (
    Encoder,
    Routed,
    Topics,
    oversize_dead_letter,
    route,
    unreadable_headers_dead_letter,
    unroutable_dead_letter,
)
from processor.stream.txn_errors import TxnAction
from processor.stream.writer import OutputWriter

__all__ = ["StreamProcessor", "StreamFatalError", "RegistrySource", "SessionFactory"]

log = logging.getLogger(__name__)

RegistrySource = Callable[[], Registry] | Any  # a callable, or an object with ``.current``
SessionFactory = Callable[..., Session]  # called like TxnSession(settings, stop=..., ...)

_IDLE_POLL_S = 0.5


def _registry_getter(source: RegistrySource) -> Callable[[], Registry]:
    if hasattr(source, "current"):
        return lambda: source.current  # RegistryWatcher (or anything shaped like it)
    if callable(source):
        return source
    if isinstance(source, Registry):
        return lambda: source
    raise TypeError("registry_source must be a Registry, a callable or have .current")


def _avro_encoder(settings: Settings) -> Encoder:
    from processor.avro.codec import AvroCodec

    try:
        return AvroCodec.from_settings(settings).encode
    except ConfigError:
        raise  # already one clear line (subject, schema, what to do)
    except Exception as exc:  # noqa: BLE001 - e.g. schema registry unreachable: a clear line, no traceback
        raise ConfigError(f"Avro codec unavailable (schema registry?): {type(exc).__name__}") from None


class StreamProcessor:
    """One consumer-group member routing ``hl7.raw`` exactly once.

    ``run()`` blocks until ``stop()`` (thread-safe; from a signal, go through
    :func:`processor.shutdown.on_shutdown_signal`) or a fatal error
    (:class:`StreamFatalError`). ``live()`` and ``readiness`` feed ``/livez`` and ``/readyz``.
    """

    def __init__(
        self,
        settings: Settings,
        registry_source: RegistrySource,
        *,
        encode: Encoder | None = None,
        lag_interval_s: float = 5.0,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        session_factory: SessionFactory = TxnSession,
        changelog_factory: Callable[[Settings], ChangelogSource] = ChangelogReader,
    ) -> None:
        self._settings = settings
        self._registry = _registry_getter(registry_source)
        self._encode = encode
        self._topics = Topics(accepted=settings.topic_accepted, deadletter=settings.topic_deadletter)
        self._stop = threading.Event()
        self._running = False
        self._failed = False
        self._buffer: list[Message] = []  # the batch being collected (rebalance callbacks prune it)
        self._oversize = OversizePolicy()
        self._dedupe = (
            DedupeStep(settings, self._topics, changelog_factory(settings))
            if settings.dedupe_enabled
            else NoDedupe()
        )
        self._txn_seq = 0  # numbers the transactions: the dedupe's pending entries belong to one
        # Runs commit_transaction while the loop routes the next transaction's records; the
        # loop touches neither the producer nor the consumer until that commit returned.
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="txn-commit")
        self._beat = time.monotonic()
        self._live_window_s = max(60.0, 3 * settings.transaction_timeout_ms / 1000.0)
        self._session: Session = session_factory(
            settings,
            stop=self._stop,
            on_revoke=self._on_revoke,
            on_assign=self._on_assign,
            heartbeat=self._heartbeat,
            producer_factory=producer_factory,
            lag_interval_s=lag_interval_s,
        )
        self._writer = OutputWriter(self._session, self._oversize, self._dedupe, self._topics)
        self.committed_records = 0  # for embedding/tests; counts outputs committed by this instance
        self.readiness = Readiness()
        self.readiness.add("stream_loop", lambda: self._running and self._session.ready)
        self.readiness.add("registry", self._registry_ok)

    # ------------------------------------------------------------------ public API
    def run(self) -> None:
        """Process until ``stop()``; raises :class:`StreamFatalError` on a fatal Kafka error."""
        if self._running:
            raise RuntimeError("StreamProcessor.run() is already running")
        if self._encode is None:
            self._encode = _avro_encoder(self._settings)
        log.info(
            "stream processor starting: group=%s transactional.id=%s raw=%s",
            self._settings.consumer_group,
            self._settings.transactional_id,
            self._settings.topic_raw,
        )
        session = self._session
        try:
            self._dedupe.start()  # ConfigError unless the changelog topic is there
            if not session.start():
                raise SessionStopped()
            self._running = True
            while not self._stop.is_set():
                self._heartbeat()
                batch = self._collect()
                if batch:
                    self._process(batch)
                session.update_lag()
        except SessionStopped:
            log.info("stopped while Kafka was unreachable")
        except SessionError as exc:  # only a fatal one gets this far
            self._failed = True
            log.error("FATAL Kafka error, stopping this processor: %s", exc.name)
            raise StreamFatalError(exc.name) from exc
        finally:
            self._running = False
            self._buffer = []
            self._committer.shutdown(wait=True)
            session.close(flush=not self._failed)  # a fenced producer has nothing to flush
            self._dedupe.close()
            log.info("stream processor stopped")

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch in hand, commit it, leave the group and return."""
        self._stop.set()

    def live(self) -> bool:
        """Alive unless failed, or the loop has not turned for far longer than a commit may take."""
        if self._failed:
            return False
        if not self._running:
            return True  # starting up or stopped cleanly: the process decides
        return time.monotonic() - self._beat < self._live_window_s

    @property
    def running(self) -> bool:
        return self._running

    @property
    def assignment(self) -> frozenset[Partition]:
        return self._session.assignment

    @property
    def producers_created(self) -> int:
        """More than 1: a producer was replaced (ambiguous outcome)."""
        return self._session.producers_created

    # ------------------------------------------------------------------ the loop
    def _collect(self) -> list[Message]:
        """Up to ``batch_max_records`` records, waiting at most ``batch_max_ms`` after the first."""
        settings = self._settings
        session, limit = self._session, max(1, settings.batch_max_records) * settings.pipeline_transactions
        # poll() returns as soon as one record is there (consume() would wait for a full
        # batch or the whole timeout); the batch window starts at the first record.
        first = session.poll(_IDLE_POLL_S)
        if first is None:
            return []
        self._buffer = [first]
        deadline = time.monotonic() + settings.batch_max_ms / 1000.0
        while len(self._buffer) < limit and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            more = session.consume(limit - len(self._buffer), remaining)  # may prune _buffer
            self._buffer.extend(more)
        batch, self._buffer = self._buffer, []
        return batch

    def _process(self, batch: list[Message]) -> None:
        """The collected records as consecutive transactions of ``batch_max_records``, the
        routing of each one overlapped with the previous one's commit (docs/stream.md,
        "Pipelining"). After a failed transaction the consumer is back at the committed
        offsets, so the records of the later ones are dropped here and read again."""
        size = max(1, self._settings.batch_max_records)
        txns = [batch[i : i + size] for i in range(0, len(batch), size)]
        registry = self._registry()
        now_us = time.time_ns() // 1000  # one clock reading per collected batch
        self._txn_seq += 1
        routed = self._route_all(txns[0], registry, now_us, self._txn_seq)
        for txn, following in zip(txns, [*txns[1:], []], strict=True):
            routed_next = self._transact(txn, routed, following, registry, now_us)
            if routed_next is None:
                return
            routed = routed_next

    def _transact(
        self,
        batch: list[Message],
        routed: list[Routed],
        following: list[Message],
        registry: Registry,
        now: int,
    ) -> list[Routed] | None:
        """One transaction: produce ``routed``, send offsets, commit; while the commit is in
        flight, route ``following``. Returns that routing, or ``None`` after a failure: the
        consumer was then rewound to the committed offsets, so ``following`` is read again."""
        session, token = self._session, self._txn_seq
        ends = end_offsets(batch)
        routed_next: list[Routed] = []
        try:
            session.begin()
            for i, msg in enumerate(batch):
                routed[i] = self._writer.write(msg, routed[i], registry, now, self._encode)
            session.send_offsets(ends)  # first: its round trips overlap the outputs' acks
            self._dedupe.write_changelog(session, token)  # row-12 state, in the same transaction
            if not following:
                session.commit()
            else:  # librdkafka waits for the commit without the GIL: route meanwhile
                self._txn_seq += 1
                commit = self._committer.submit(session.commit)
                try:
                    routed_next = self._route_all(following, registry, now, self._txn_seq)
                finally:
                    commit.result()  # the commit's SessionError, if any, is raised here
        except SessionError as failure:
            landed = self._recover(failure, ends)
            PROCESSOR_TRANSACTIONS.labels(result="committed" if landed else "aborted").inc()
            if landed:
                log.info("the ambiguous commit did land (committed offsets match the batch)")
                self._committed(batch, routed, token, ends)
            self._dedupe.aborted()  # what was routed ahead is read again after the rewind
            return None
        PROCESSOR_TRANSACTIONS.labels(result="committed").inc()
        self._committed(batch, routed, token, ends)
        return routed_next

    def _committed(self, batch: list[Message], routed: list[Routed], token: int, ends: Offsets) -> None:
        self._oversize.written(coords(msg) for msg in batch)
        self._dedupe.committed(token, (p for _t, p in ends))
        self._count(routed)

    def _recover(self, failure: SessionError, ends: Offsets) -> bool:
        """The failure table of docs/stream.md; True when the batch was committed after all.

        Only an ambiguous failure can have committed: once the replacement producer's
        ``init_transactions`` has completed or aborted the old transaction, the group's
        committed offsets tell which (they equal ``ends`` only if it committed), so the
        counters neither drop nor double a batch.
        """
        session = self._session
        if failure.action is TxnAction.FATAL:
            self._fatal(failure)
        if failure.action is TxnAction.ABORT:
            log.warning("transaction aborted: %s", failure.name)
            try:
                session.abort()
            except SessionError as again:
                if again.action is TxnAction.FATAL:
                    self._fatal(again)
                log.warning("abort outcome unknown (%s); replacing producer", again.name)
                session.replace_producer()
            session.rewind()
            return False
        log.warning("transaction outcome unknown (%s); replacing producer (fences the old one)", failure.name)
        session.replace_producer()
        committed = session.rewind()
        return committed is not None and all(committed.get(tp) == end for tp, end in ends.items())

    @staticmethod
    def _fatal(failure: SessionError) -> NoReturn:
        PROCESSOR_TRANSACTIONS.labels(result="aborted").inc()
        raise failure  # run() logs it and raises StreamFatalError

    # ------------------------------------------------------------------ one record
    def _route_all(self, batch: list[Message], registry: Registry, now_us: int, token: int) -> list[Routed]:
        """Route each record, then row 12 (a resend of an accepted message is a DUPLICATE;
        otherwise an accepted one is remembered as pending in transaction ``token``)."""
        assert self._encode is not None
        check, encode = self._dedupe.check, self._encode
        return [
            check(msg, self._route(msg, registry, now_us), registry, now_us, encode, token) for msg in batch
        ]

    def _route(self, msg: Message, registry: Registry, now_us: int) -> Routed:
        """Exactly one output for ``msg`` (rows 1-11). The loop's one catch-all: whatever goes
        wrong here becomes a ``PROCESSING_ERROR`` dead letter, so no record can stop its partition."""
        encode, topics, dedupe = self._encode, self._topics, self._settings.dedupe_enabled
        assert encode is not None
        headers = kafka_headers(msg)  # once per message (see processor.stream.records)
        raw = None
        try:
            raw = raw_record(msg, headers)
            if headers is None:
                return unreadable_headers_dead_letter(
                    raw, registry, now_us=now_us, topics=topics, encode=encode
                )
            if self._oversize.slim((raw.topic, raw.partition, raw.offset)):
                return oversize_dead_letter(
                    raw, registry, now_us=now_us, topics=topics, encode=encode, kafka_headers=headers
                )
            return route(
                raw,
                registry,
                now_us=now_us,
                topics=topics,
                encode=encode,
                kafka_headers=headers,
                dedupe=dedupe,
            )
        except Exception as exc:  # noqa: BLE001 - route() never raises by contract; belt and braces
            log.error(
                "routing %s[%d]@%d failed (%s); dead-lettered as PROCESSING_ERROR",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                type(exc).__name__,
            )
            return unroutable_dead_letter(
                raw or bare_raw_record(msg), registry, error=exc, now_us=now_us, topics=topics, encode=encode
            )

    def _count(self, routed: list[Routed]) -> None:
        self.committed_records += len(routed)
        counts = Counter((r.outcome, r.reason.value if r.reason else "", r.principal) for r in routed)
        for (outcome, reason, principal), n in counts.items():
            PROCESSOR_RECORDS.labels(outcome=outcome, reason=reason, principal=principal).inc(n)
        now = time.time()
        for r in routed:
            if r.received_at_us is not None:
                latency = now - r.received_at_us / 1e6
                if latency >= 0:
                    PROCESSOR_END_TO_END.observe(latency)

    # ------------------------------------------------------------------ callbacks
    def _on_revoke(self, gone: frozenset[Partition], why: str) -> None:
        """Partitions revoked or lost (inside poll/consume, never in a transaction): drop
        their buffered records; the new owner re-reads them from the committed offsets."""
        before = len(self._buffer)
        self._buffer[:] = [m for m in self._buffer if (m.topic(), m.partition()) not in gone]
        self._oversize.forget(gone)
        self._dedupe.forget(p for _t, p in gone)
        log.info(
            "%s partitions %s (dropped %d uncommitted buffered records); owning %s",
            why,
            sorted(p for _t, p in gone),
            before - len(self._buffer),
            sorted(p for _t, p in self._session.assignment),
        )

    def _on_assign(self, new: frozenset[Partition]) -> None:
        """Partitions assigned (inside poll/consume, never in a transaction): restore their
        dedupe state before any of their records is routed (a failure is fatal)."""
        self._dedupe.restore(p for _t, p in new)

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()

    def _registry_ok(self) -> bool:
        return isinstance(self._registry(), Registry)
