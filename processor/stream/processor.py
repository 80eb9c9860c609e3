"""The exactly-once processor: one consumer, one transactional producer, one loop.

Read ``hl7.raw`` (``read_committed``, no auto-commit), route each record with the
pure :func:`processor.stream.routing.route`, and write the outputs *and* the
consumed offsets in one Kafka transaction per batch
(``send_offsets_to_transaction`` with the consumer's group metadata, KIP-447, so a
zombie from an older group generation cannot commit).

Loop shape, chosen because confluent-kafka runs rebalance callbacks *inside*
``consume()``: a batch is first collected (``consume`` calls only, no transaction
open), then produced and committed with no ``consume`` call in between. So a
revocation can only arrive while no transaction is open, and the callback simply
drops the buffered records of the revoked partitions; their new owner re-reads
them from the committed offsets.

Failures (see :mod:`processor.stream.txn_errors`): record content never aborts a
transaction (it becomes a dead letter); an abortable broker error aborts and
rewinds the consumer to the committed offsets; an ambiguous one (timeout,
retriable) replaces the producer (same ``transactional.id``, which fences the old
one) and rewinds; a fatal one (fenced) raises :class:`StreamFatalError`.
"""

from __future__ import annotations

import functools
import logging
import operator
from dataclasses import fields
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from processor.avro.raw import RawRecord, decode_headers
from processor.config import Settings, kafka_passthrough
from processor.errors import ConfigError, GatewayError
from processor.health import Readiness
from processor.kafka.client_config import consumer_config, consumer_group_protocol, producer_config
from processor.metrics import PROCESSOR_END_TO_END, PROCESSOR_RECORDS, PROCESSOR_TRANSACTIONS
from processor.registry.model import Registry
from processor.stream.lag import LagTracker
from processor.stream.routing import (
    OVERSIZE_DETAIL,
    Encoder,
    Routed,
    Topics,
    oversize_dead_letter,
    route,
    unreadable_headers_dead_letter,
    unroutable_dead_letter,
)
from processor.stream.txn_errors import TxnAction, classify, error_name

__all__ = ["StreamProcessor", "StreamFatalError", "RegistrySource"]

log = logging.getLogger(__name__)

RegistrySource = Callable[[], Registry] | Any  # a callable, or an object with ``.current``

_IDLE_POLL_S = 0.5
_INIT_RETRY_MAX_S = 10.0
# Delivery errors that mean "this record can never be written" (not "the broker is down").
_RECORD_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}
)


def _coords(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record (never None for a record without error)."""
    return cast(str, msg.topic()), cast(int, msg.partition()), cast(int, msg.offset())


# ``msg.headers()`` called through methodcaller, i.e. through C's PyObject_Call, never
# as a plain ``msg.headers()`` in Python code. Why: for a header *name* that is not
# UTF-8, confluent-kafka (2.x) returns a list holding a NULL name *and* leaves the
# UnicodeDecodeError set. PyObject_Call checks for that and raises SystemError; the
# interpreter's specialised fast path for a hot ``msg.headers()`` call site does not
# (CPython 3.11+), so the broken list would reach Python and crash the process on
# first touch (seen: SIGSEGV). Also: call it once per message; a second call returns
# the cached broken list with no error at all.
_read_headers = operator.methodcaller("headers")


def _kafka_headers(msg: Message) -> list[tuple[str, Any]] | None:
    """The record's headers; ``None`` when confluent-kafka cannot return them (a header
    name that is not UTF-8). Never raises. Call at most once per message (see above)."""
    try:
        return cast("list[tuple[str, Any]]", _read_headers(msg) or [])
    except Exception:  # noqa: BLE001 - SystemError (with the UnicodeDecodeError as cause)
        return None


_RAW_SET = tuple(RawRecord.__dict__[f.name].__set__ for f in fields(RawRecord))


def _raw_record(*values: Any) -> RawRecord:
    """``RawRecord(*values)`` (all 7) through the slot descriptors: an equal, frozen instance
    at half the cost of the frozen ``__init__`` (once per consumed record)."""
    obj = object.__new__(RawRecord)
    for setter, value in zip(_RAW_SET, values):
        setter(obj, value)
    return obj


class StreamFatalError(GatewayError):
    """The processor cannot continue (fenced by a newer instance, fatal client error)."""


def _registry_getter(source: RegistrySource) -> Callable[[], Registry]:
    if hasattr(source, "current"):
        return lambda: source.current  # RegistryWatcher (or anything shaped like it)
    if callable(source):
        return source
    if isinstance(source, Registry):
        return lambda: source
    raise TypeError("registry_source must be a Registry, a callable or have .current")


class StreamProcessor:
    """One consumer-group member routing ``hl7.raw`` exactly once.

    ``run()`` blocks until ``stop()`` (thread-safe, also from a signal handler) or a
    fatal error (:class:`StreamFatalError`). ``live()`` and ``readiness`` feed the
    ``/livez`` and ``/readyz`` probes.
    """

    def __init__(
        self,
        settings: Settings,
        registry_source: RegistrySource,
        *,
        encode: Encoder | None = None,
        lag_interval_s: float = 5.0,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self._settings = settings
        self._registry = _registry_getter(registry_source)
        self._encode = encode
        self._producer_factory = producer_factory
        self.producers_created = 0  # > 1 means a producer was replaced (ambiguous outcome)
        self._topics = Topics(accepted=settings.topic_accepted, deadletter=settings.topic_deadletter)
        self._txn_timeout_s = settings.transaction_timeout_ms / 1000.0
        self._stop = threading.Event()
        self._running = False
        self._failed = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._buffer: list[Message] = []
        self._assigned: set[tuple[str, int]] = set()
        # Records whose output the broker refused as too large: ``_suspects`` failed inside
        # a shared produce request (a broker refuses the whole batch, so innocent neighbours
        # fail with it) and are re-sent alone on the retry; ``_oversize`` failed alone, so
        # their outputs really are too large and become payload-less dead letters.
        self._suspects: set[tuple[str, int, int]] = set()
        self._oversize: set[tuple[str, int, int]] = set()
        self._lag = LagTracker(lag_interval_s)
        self._beat = time.monotonic()
        self._live_window_s = max(60.0, 3 * self._txn_timeout_s)
        self.committed_records = 0  # for embedding/tests; counts outputs committed by this instance
        self.readiness = Readiness()
        self.readiness.add("stream_loop", lambda: self._running and self._producer is not None)
        self.readiness.add("registry", self._registry_ok)

    # ------------------------------------------------------------------ public API
    def run(self) -> None:
        """Process until ``stop()``; raises :class:`StreamFatalError` on a fatal Kafka error."""
        if self._running:
            raise RuntimeError("StreamProcessor.run() is already running")
        if self._encode is None:
            from processor.avro.codec import AvroCodec

            try:
                self._encode = AvroCodec.from_settings(self._settings).encode
            except ConfigError:
                raise  # already one clear line (subject, schema, what to do)
            except Exception as exc:  # e.g. schema registry unreachable: a clear line, no traceback
                raise ConfigError(
                    f"Avro codec unavailable (schema registry?): {type(exc).__name__}"
                ) from None
        log.info(
            "stream processor starting: group=%s transactional.id=%s raw=%s",
            self._settings.consumer_group, self._settings.transactional_id, self._settings.topic_raw,
        )
        try:
            self._producer = self._new_producer()
            if self._producer is None:
                return  # stopped before Kafka became reachable
            self._consumer = self._new_consumer()
            self._running = True
            while not self._stop.is_set():
                self._beat = time.monotonic()
                batch = self._collect()
                if batch:
                    self._process(batch)
                self._lag.maybe_update(self._consumer)
        except _Stopped:
            log.info("stopped while Kafka was unreachable")
        except StreamFatalError:
            self._failed = True
            raise
        finally:
            self._running = False
            self._shutdown()

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
    def assignment(self) -> frozenset[tuple[str, int]]:
        return frozenset(self._assigned)

    # ------------------------------------------------------------------ clients
    def _new_consumer(self) -> Consumer:
        extra: dict[str, Any] = {"enable.partition.eof": False}
        passthrough = kafka_passthrough()
        # Classic protocol: cooperative, so a rebalance revokes only the partitions that move.
        # group.protocol=consumer (KIP-848) is incremental by design, with the assignor on
        # the broker (group.remote.assignor): librdkafka refuses the client-side setting.
        if (
            consumer_group_protocol(passthrough) == "classic"
            and "partition.assignment.strategy" not in passthrough
        ):
            extra["partition.assignment.strategy"] = "cooperative-sticky"
        consumer = Consumer(consumer_config(self._settings, **extra))
        consumer.subscribe(
            [self._settings.topic_raw],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        return consumer

    def _new_producer(self) -> Producer | None:
        """A transactional producer after ``init_transactions`` (retried until stop)."""
        conf = producer_config(
            self._settings,
            **{
                "transactional.id": self._settings.transactional_id,
                "transaction.timeout.ms": self._settings.transaction_timeout_ms,
            },
        )
        delay = 0.5
        producer = self._producer_factory(conf)
        self.producers_created += 1
        while True:
            try:
                producer.init_transactions(self._txn_timeout_s)
                log.info("transactional producer ready (%s)", self._settings.transactional_id)
                return producer
            except KafkaException as exc:
                if classify(exc) is TxnAction.FATAL:
                    raise StreamFatalError(
                        f"init_transactions failed fatally: {error_name(exc)}"
                    ) from exc
                log.warning("init_transactions failed, retrying: %s", error_name(exc))
                if not exc.args[0].retriable():
                    producer = self._producer_factory(conf)
                    self.producers_created += 1
            if self._stop.wait(delay):
                return None
            self._beat = time.monotonic()
            delay = min(delay * 2, _INIT_RETRY_MAX_S)

    # ------------------------------------------------------------------ rebalance callbacks
    # Called from inside consumer.consume(), i.e. on this loop's thread, never while a
    # transaction is open (see module docstring).
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        log.info(
            "assigned partitions %s; owning %s",
            sorted(tp.partition for tp in partitions), sorted(p for _t, p in self._assigned),
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "lost")

    def _drop(self, partitions: list[TopicPartition], why: str) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        before = len(self._buffer)
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) not in gone]
        self._assigned -= gone
        self._lag.forget(partitions)
        log.info(
            "%s partitions %s (dropped %d uncommitted buffered records); owning %s",
            why, sorted(p for _t, p in gone), before - len(self._buffer),
            sorted(p for _t, p in self._assigned),
        )

    # ------------------------------------------------------------------ the loop
    def _collect(self) -> list[Message]:
        """Up to ``batch_max_records`` records, waiting at most ``batch_max_ms`` after the first."""
        consumer = self._consumer
        assert consumer is not None
        limit = max(1, self._settings.batch_max_records)
        self._buffer = []
        # poll() returns as soon as one record is there (consume() would wait for a full
        # batch or the whole timeout); the batch window starts at the first record.
        first = consumer.poll(_IDLE_POLL_S)
        if first is not None:
            self._take([first])
        if not self._buffer:
            return []
        deadline = time.monotonic() + self._settings.batch_max_ms / 1000.0
        while len(self._buffer) < limit and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._take(consumer.consume(limit - len(self._buffer), remaining))
        batch, self._buffer = self._buffer, []
        return batch

    def _take(self, messages: list[Message]) -> None:
        for msg in messages:
            err = msg.error()
            if err is None:
                self._buffer.append(msg)
            elif err.fatal():
                raise StreamFatalError(f"consumer error: {err.name()}: {err.str()}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s: %s", err.name(), err.str())

    @staticmethod
    def _raw(msg: Message, headers: list[tuple[str, Any]] | None) -> RawRecord:
        ts_type, ts = msg.timestamp()
        return _raw_record(
            cast(str, msg.topic()),
            cast(int, msg.partition()),
            cast(int, msg.offset()),
            msg.key(),
            msg.value() or b"",
            decode_headers(headers),
            None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
        )

    def _route(self, msg: Message, registry: Registry, now_us: int) -> Routed:
        """Exactly one output for ``msg``; nothing a record holds can make this raise."""
        assert self._encode is not None
        headers = _kafka_headers(msg)
        raw = self._raw(msg, headers)
        try:
            if headers is None:
                return unreadable_headers_dead_letter(
                    raw, registry, now_us=now_us, topics=self._topics, encode=self._encode
                )
            if self._oversize and (raw.topic, raw.partition, raw.offset) in self._oversize:
                return oversize_dead_letter(
                    raw, registry, now_us=now_us, topics=self._topics, encode=self._encode,
                    kafka_headers=headers,
                )
            return route(
                raw, registry, now_us=now_us, topics=self._topics, encode=self._encode,
                kafka_headers=headers,
            )
        except Exception as exc:  # noqa: BLE001 - route() never raises by contract; belt and braces
            log.error(
                "routing %s[%d]@%d failed (%s); dead-lettered as PROCESSING_ERROR",
                raw.topic, raw.partition, raw.offset, type(exc).__name__,
            )
            return unroutable_dead_letter(
                raw, registry, error=exc, now_us=now_us, topics=self._topics, encode=self._encode
            )

    def _process(self, batch: list[Message]) -> None:
        """Route, produce and commit one batch in one transaction."""
        registry = self._registry()
        now_us = time.time_ns() // 1000
        routed = [self._route(msg, registry, now_us) for msg in batch]
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            offsets[(cast(str, msg.topic()), cast(int, msg.partition()))] = cast(int, msg.offset()) + 1
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        try:
            producer.begin_transaction()
            for i, msg in enumerate(batch):
                # The record actually written (a too-large output is replaced): counted as such.
                routed[i] = self._produce(producer, msg, routed[i], registry, now_us)
            producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                consumer.consumer_group_metadata(),
                self._txn_timeout_s,
            )
            producer.commit_transaction(self._txn_timeout_s)
        except KafkaException as exc:
            if self._recover(exc, offsets):
                log.info("the ambiguous commit did land (committed offsets match the batch)")
            else:
                PROCESSOR_TRANSACTIONS.labels(result="aborted").inc()
                return
        PROCESSOR_TRANSACTIONS.labels(result="committed").inc()
        if self._suspects:  # written after all: they were only a neighbour's victims
            self._suspects.difference_update(_coords(msg) for msg in batch)
        self._count(routed)

    def _produce(
        self, producer: Producer, msg: Message, out: Routed, registry: Registry, now_us: int
    ) -> Routed:
        coords = _coords(msg)
        alone = bool(self._suspects) and coords in self._suspects
        on_delivery = functools.partial(self._delivered, coords, alone)
        if alone:  # in a record batch of its own: whatever fails now is this record's fault
            producer.flush(self._txn_timeout_s)
        while True:
            try:
                producer.produce(
                    out.topic, value=out.value, key=out.key, headers=out.headers,
                    on_delivery=on_delivery,
                )
                if alone:
                    producer.flush(self._txn_timeout_s)
                return out
            except BufferError:
                producer.poll(0.05)  # local queue full: serve delivery reports, then retry
            except KafkaException as exc:
                if exc.args[0].code() not in _RECORD_TOO_LARGE or out.detail == OVERSIZE_DETAIL:
                    raise
                log.warning(
                    "output for %s[%d]@%d too large; dead-lettering without payload",
                    msg.topic(), msg.partition(), msg.offset(),
                )
                assert self._encode is not None
                # The headers as routed: msg.headers() must not be called twice (see top).
                out = oversize_dead_letter(
                    self._raw(msg, out.headers), registry, now_us=now_us, topics=self._topics,
                    encode=self._encode, kafka_headers=out.headers,
                )

    def _delivered(
        self, source: tuple[str, int, int], alone: bool, err: KafkaError | None, _msg: Message
    ) -> None:
        if err is not None and err.code() in _RECORD_TOO_LARGE:
            # The transaction will fail. Sent alone: this output is too large, so on the
            # retry the record is dead-lettered without payload. Sent with others: the
            # broker may have refused it for a neighbour, so the retry sends it alone.
            if alone:
                self._suspects.discard(source)
                self._oversize.add(source)
            else:
                self._suspects.add(source)

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
        for pending in (self._oversize, self._suspects):
            if pending:  # forget partitions no longer owned (their new owner starts afresh)
                pending.difference_update(
                    {(s, p, o) for (s, p, o) in pending if (s, p) not in self._assigned}
                )

    # ------------------------------------------------------------------ recovery
    def _recover(self, exc: KafkaException, offsets: dict[tuple[str, int], int]) -> bool:
        """Abort or replace the producer, rewind; True when the batch was committed after all.

        Only an ambiguous failure can have committed: once the replacement producer's
        ``init_transactions`` has completed or aborted the old transaction, the group's
        committed offsets tell which (they equal ``offsets``, the batch's ends, only if
        it committed), so the counters neither drop nor double a batch.
        """
        action = classify(exc)
        if action is TxnAction.FATAL:
            PROCESSOR_TRANSACTIONS.labels(result="aborted").inc()
            log.error("FATAL Kafka error, stopping this processor: %s", error_name(exc))
            raise StreamFatalError(error_name(exc)) from exc
        if action is TxnAction.ABORT:
            log.warning("transaction aborted: %s", error_name(exc))
            try:
                assert self._producer is not None
                self._producer.abort_transaction(self._txn_timeout_s)
            except KafkaException as abort_exc:
                if classify(abort_exc) is TxnAction.FATAL:
                    log.error("FATAL Kafka error on abort: %s", error_name(abort_exc))
                    raise StreamFatalError(error_name(abort_exc)) from abort_exc
                log.warning("abort outcome unknown (%s); replacing producer", error_name(abort_exc))
                self._replace_producer()
        else:
            log.warning(
                "transaction outcome unknown (%s); replacing producer (fences the old one)",
                error_name(exc),
            )
            self._replace_producer()
            committed = self._rewind()
            return committed is not None and all(committed.get(tp) == o for tp, o in offsets.items())
        self._rewind()
        return False

    def _replace_producer(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.purge(in_queue=True, in_flight=True, blocking=False)
            except Exception:  # noqa: BLE001 - the old producer is being discarded anyway
                pass
            del old
        self._producer = self._new_producer()
        if self._producer is None:  # stop() while Kafka was unreachable
            raise _Stopped()

    def _rewind(self) -> dict[tuple[str, int], int] | None:
        """Seek every owned partition back to its committed offset (the truth after abort).

        Returns those offsets, or ``None`` when they could not be read (the consumer is
        then rebuilt and rejoins the group, which starts from them anyway).
        """
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if not assignment:
            return {}
        try:
            committed = consumer.committed(assignment, timeout=max(30.0, self._txn_timeout_s))
            positions: dict[tuple[str, int], int] = {}
            for tp in committed:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                positions[(tp.topic, tp.partition)] = tp.offset
            log.info("rewound %d partitions to committed offsets", len(committed))
            return positions
        except KafkaException as exc:
            log.warning("rewind failed (%s); rejoining the group", error_name(exc))
            self._rebuild_consumer()
            return None

    def _rebuild_consumer(self) -> None:
        old, self._consumer = self._consumer, None
        if old is not None:
            try:
                old.close()
            except Exception:  # noqa: BLE001
                log.warning("closing the old consumer failed", exc_info=True)
        self._assigned.clear()
        self._lag.forget_all()
        self._consumer = self._new_consumer()

    # ------------------------------------------------------------------ shutdown / health
    def _shutdown(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            try:
                consumer.close()  # leaves the group now: no wait for the session timeout
            except Exception:  # noqa: BLE001
                log.warning("consumer close failed", exc_info=True)
        if producer is not None and not self._failed:  # a fenced producer has nothing to flush
            try:
                producer.flush(5)
            except Exception:  # noqa: BLE001
                log.warning("producer flush failed", exc_info=True)
        self._assigned.clear()
        self._lag.forget_all()
        log.info("stream processor stopped")

    def _registry_ok(self) -> bool:
        return isinstance(self._registry(), Registry)


class _Stopped(Exception):
    """Internal: stop() arrived while a replacement producer could not be initialised."""
