"""A transactional Kafka session: one consumer, one transactional producer, typed.

A thin wrapper over confluent-kafka for a consume-transform-produce loop (KIP-447):
``begin`` / ``produce`` / ``send_offsets`` / ``commit`` / ``abort``, ``replace_producer``
(same ``transactional.id``: fences the old one) and ``rewind`` (seek every owned
partition to its committed offset). Every failure of a Kafka call comes out as a
:class:`SessionError` that already says what to do about it
(:func:`processor.stream.txn_errors.classify`: fatal, abort, or recreate the producer);
the loop decides *when*. Nothing here knows about HL7.

The consumer reads ``read_committed`` without auto-commit (:func:`consumer_config`);
its rebalance callbacks run inside ``poll``/``consume`` on the caller's thread and keep
:attr:`TxnSession.assignment`; an assignment is passed on to ``on_assign`` (the processor
restores its dedupe state there), a revocation or loss to ``on_revoke``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from processor.config import Settings
from processor.errors import RecordTooLarge, SessionError, SessionStopped
from processor.kafka.client_config import consumer_config, consumer_group_protocol, producer_config
from processor.stream.lag import LagTracker
from processor.stream.txn_errors import TxnAction, classify, error_name

__all__ = [
    "Offsets",
    "Partition",
    "RecordTooLarge",
    "Session",
    "SessionError",
    "SessionStopped",
    "TxnSession",
]

log = logging.getLogger("processor.stream.session")

Partition = tuple[str, int]
Offsets = dict[Partition, int]
Headers = list[tuple[str, Any]]
RevokeListener = Callable[[frozenset[Partition], str], None]
AssignListener = Callable[[frozenset[Partition]], None]
Delivered = Callable[[int, int], None]  # (partition, offset) of a record the broker acknowledged

_INIT_RETRY_MAX_S = 10.0
_BY_KEY = -1  # RD_KAFKA_PARTITION_UA: the partitioner picks the partition from the key
# Errors that mean "this record can never be written" (not "the broker is down").
_RECORD_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}
)


def _failure(exc: BaseException) -> SessionError:
    """The :class:`SessionError` for a failed Kafka call: its safe reaction and log-safe name."""
    return SessionError(classify(exc), error_name(exc))


class Session(Protocol):
    """What the stream loop needs from Kafka (:class:`TxnSession`, or a fake in tests)."""

    producers_created: int

    @property
    def assignment(self) -> frozenset[Partition]: ...
    @property
    def ready(self) -> bool: ...
    def start(self) -> bool: ...
    def poll(self, timeout: float) -> Message | None: ...
    def consume(self, max_records: int, timeout: float) -> list[Message]: ...
    def begin(self) -> None: ...
    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_too_large: Callable[[], None] | None = None,
        on_delivered: Delivered | None = None,
        partition: int | None = None,
    ) -> None: ...
    def flush(self) -> None: ...
    def send_offsets(self, offsets: Offsets) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def replace_producer(self) -> None: ...
    def rewind(self) -> Offsets | None: ...
    def update_lag(self) -> None: ...
    def close(self, *, flush: bool) -> None: ...


class TxnSession:
    """The real :class:`Session` (confluent-kafka). One thread only: the loop's."""

    def __init__(
        self,
        settings: Settings,
        *,
        stop: threading.Event,
        on_revoke: RevokeListener,
        on_assign: AssignListener = lambda _partitions: None,
        heartbeat: Callable[[], None] = lambda: None,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        lag_interval_s: float = 5.0,
    ) -> None:
        self._settings = settings
        self._stop = stop
        self._on_revoke = on_revoke
        self._on_assign = on_assign
        self._heartbeat = heartbeat
        self._producer_factory = producer_factory
        self._consumer_factory = consumer_factory
        self._timeout_s = settings.transaction_timeout_ms / 1000.0
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._assigned: set[Partition] = set()
        self._lag = LagTracker(lag_interval_s)
        self.producers_created = 0  # > 1 means a producer was replaced (ambiguous outcome)

    @property
    def assignment(self) -> frozenset[Partition]:
        return frozenset(self._assigned)

    @property
    def ready(self) -> bool:
        return self._producer is not None

    def start(self) -> bool:
        """Producer (``init_transactions``, retried until stop), then consumer; False if stopped."""
        self._producer = self._new_producer()
        if self._producer is None:
            return False
        self._consumer = self._new_consumer()
        return True

    # ------------------------------------------------------------------ consuming
    def poll(self, timeout: float) -> Message | None:
        """One record, or ``None`` (nothing within ``timeout``, or a non-fatal consumer error)."""
        msg = self._consumer.poll(timeout)  # type: ignore[union-attr]
        return msg if msg is None or msg.error() is None or self._usable(msg) else None

    def consume(self, max_records: int, timeout: float) -> list[Message]:
        """Up to ``max_records`` records within ``timeout`` (consumer errors left out or raised)."""
        got = self._consumer.consume(max_records, timeout)  # type: ignore[union-attr]
        return [m for m in got if m.error() is None or self._usable(m)]

    @staticmethod
    def _usable(msg: Message) -> bool:
        err = msg.error()
        assert err is not None
        if err.fatal():
            raise SessionError(TxnAction.FATAL, f"consumer error: {err.name()}: {err.str()}")
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s: %s", err.name(), err.str())
        return False

    # ------------------------------------------------------------------ the transaction
    def begin(self) -> None:
        try:
            self._producer.begin_transaction()  # type: ignore[union-attr]
        except KafkaException as exc:
            raise _failure(exc) from exc

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_too_large: Callable[[], None] | None = None,
        on_delivered: Delivered | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record; ``on_too_large()`` runs if the broker refuses it as too large,
        ``on_delivered(partition, offset)`` when the broker acknowledged it (both from inside
        ``flush``/``commit``, on the thread that calls them). ``partition``: that partition,
        not the key's.

        Raises :class:`RecordTooLarge` when the producer itself refuses it (nothing sent).
        """
        producer = self._producer
        assert producer is not None
        on_delivery = (
            functools.partial(_delivered, on_too_large, on_delivered)
            if on_too_large or on_delivered
            else None
        )
        where = _BY_KEY if partition is None else partition
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery, partition=where
                )
                return
            except BufferError:
                producer.poll(0.05)  # local queue full: serve delivery reports, then retry
            except KafkaException as exc:
                if exc.args[0].code() in _RECORD_TOO_LARGE:
                    raise RecordTooLarge(classify(exc), error_name(exc)) from exc
                raise _failure(exc) from exc

    def flush(self) -> None:
        """Wait until every queued record is delivered (or failed): a record batch boundary.

        A fatal error (fenced) comes out as a ``SessionError``. confluent-kafka raises it from
        ``flush`` with the error still set while it serves the next delivery report, so it
        may arrive as a ``SystemError`` whose cause is the ``KafkaException``.
        """
        try:
            self._producer.flush(self._timeout_s)  # type: ignore[union-attr]
        except KafkaException as exc:
            raise _failure(exc) from exc
        except SystemError as exc:
            if isinstance(exc.__cause__, KafkaException):
                raise _failure(exc.__cause__) from exc
            raise

    def send_offsets(self, offsets: Offsets) -> None:
        """Commit ``offsets`` in the transaction, with the consumer's group metadata (KIP-447)."""
        try:
            self._producer.send_offsets_to_transaction(  # type: ignore[union-attr]
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                self._consumer.consumer_group_metadata(),  # type: ignore[union-attr]
                self._timeout_s,
            )
        except KafkaException as exc:
            raise _failure(exc) from exc

    def commit(self) -> None:
        try:
            self._producer.commit_transaction(self._timeout_s)  # type: ignore[union-attr]
        except KafkaException as exc:
            raise _failure(exc) from exc

    def abort(self) -> None:
        try:
            self._producer.abort_transaction(self._timeout_s)  # type: ignore[union-attr]
        except KafkaException as exc:
            raise _failure(exc) from exc

    # ------------------------------------------------------------------ recovery
    def replace_producer(self) -> None:
        """Discard the producer; a new one with the same ``transactional.id`` fences it and
        completes or aborts whatever it left open. Raises :class:`SessionStopped`."""
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.purge(in_queue=True, in_flight=True, blocking=False)
            except Exception:
                log.debug("purging the discarded producer failed", exc_info=True)
            del old
        self._producer = self._new_producer()
        if self._producer is None:
            raise SessionStopped()

    def rewind(self) -> Offsets | None:
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
            committed = consumer.committed(assignment, timeout=max(30.0, self._timeout_s))
            positions: Offsets = {}
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

    def update_lag(self) -> None:
        """Refresh the consumer-lag gauge (at most every ``lag_interval_s``)."""
        self._lag.maybe_update(self._consumer)  # type: ignore[arg-type]

    def close(self, *, flush: bool) -> None:
        """Leave the group now (no wait for the session timeout); flush unless ``flush=False``."""
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                log.warning("consumer close failed", exc_info=True)
        if producer is not None and flush:
            try:
                producer.flush(5)
            except Exception:
                log.warning("producer flush failed", exc_info=True)
        self._assigned.clear()
        self._lag.forget_all()

    # ------------------------------------------------------------------ clients
    def _new_consumer(self) -> Consumer:
        extra: dict[str, Any] = {"enable.partition.eof": False}
        passthrough = self._settings.kafka_extra
        # Classic protocol: cooperative, so a rebalance revokes only the partitions that move.
        # group.protocol=consumer (KIP-848) is incremental by design, with the assignor on
        # the broker (group.remote.assignor): librdkafka refuses the client-side setting.
        if (
            consumer_group_protocol(passthrough) == "classic"
            and "partition.assignment.strategy" not in passthrough
        ):
            extra["partition.assignment.strategy"] = "cooperative-sticky"
        consumer = self._consumer_factory(consumer_config(self._settings, **extra))
        consumer.subscribe(
            [self._settings.topic_raw],
            on_assign=self._assigned_cb,
            on_revoke=functools.partial(self._revoked_cb, "revoked"),
            on_lost=functools.partial(self._revoked_cb, "lost"),
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
                producer.init_transactions(self._timeout_s)
                log.info("transactional producer ready (%s)", self._settings.transactional_id)
                return producer
            except KafkaException as exc:
                if classify(exc) is TxnAction.FATAL:
                    raise SessionError(
                        TxnAction.FATAL, f"init_transactions failed fatally: {error_name(exc)}"
                    ) from exc
                log.warning("init_transactions failed, retrying: %s", error_name(exc))
                if not exc.args[0].retriable():
                    producer = self._producer_factory(conf)
                    self.producers_created += 1
            if self._stop.wait(delay):
                return None
            self._heartbeat()
            delay = min(delay * 2, _INIT_RETRY_MAX_S)

    def _rebuild_consumer(self) -> None:
        old, self._consumer = self._consumer, None
        if old is not None:
            try:
                old.close()
            except Exception:
                log.warning("closing the old consumer failed", exc_info=True)
        if self._assigned:
            self._revoked_cb("given up", None, [TopicPartition(t, p) for t, p in self._assigned])
        self._lag.forget_all()
        self._consumer = self._new_consumer()

    # ------------------------------------------------------------------ rebalance callbacks
    # Called from inside poll()/consume(), i.e. on the loop's thread.
    def _assigned_cb(self, _consumer: Consumer | None, partitions: list[TopicPartition]) -> None:
        new = frozenset((tp.topic, tp.partition) for tp in partitions)
        self._assigned.update(new)
        log.info(
            "assigned partitions %s; owning %s",
            sorted(tp.partition for tp in partitions),
            sorted(p for _t, p in self._assigned),
        )
        if new:
            self._on_assign(new)

    def _revoked_cb(self, why: str, _consumer: Consumer | None, partitions: list[TopicPartition]) -> None:
        gone = frozenset((tp.topic, tp.partition) for tp in partitions)
        self._assigned -= gone
        self._lag.forget(partitions)
        self._on_revoke(gone, why)


def _delivered(
    on_too_large: Callable[[], None] | None,
    on_delivered: Delivered | None,
    err: KafkaError | None,
    msg: Message,
) -> None:
    if err is None:
        if on_delivered is not None:
            on_delivered(msg.partition(), msg.offset())  # type: ignore[arg-type]
    elif on_too_large is not None and err.code() in _RECORD_TOO_LARGE:
        on_too_large()
