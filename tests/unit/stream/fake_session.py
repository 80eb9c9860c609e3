"""An in-memory :class:`processor.kafka.session.Session` for loop tests (no Kafka).

It models what the loop relies on: partitions with records and committed offsets, a
consumer position per partition, one transaction at a time whose outputs and offsets
become visible together on ``commit``, and record batches (records produced since the
last ``flush``) that a "broker" refuses as a whole when one of them is too large.
Failures are scripted per call (``fail``), including an ambiguous commit that did land.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Message

from processor.errors import RecordTooLarge, SessionError
from processor.kafka.session import Offsets, Partition
from processor.stream.txn_errors import TxnAction



class FakeMessage:
    """What the loop reads of a consumed record. ``confluent_kafka.Message(...)`` can only be
    built from Python since confluent-kafka 2.10, and the floor (2.7) must run these tests."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes, value: bytes,
                 headers: list[tuple[str, bytes]]) -> None:
        self._coords = (topic, partition, offset)
        self._key, self._value, self._headers = key, value, headers

    def topic(self) -> str:
        return self._coords[0]

    def partition(self) -> int:
        return self._coords[1]

    def offset(self) -> int:
        return self._coords[2]

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)  # TIMESTAMP_CREATE_TIME

    def error(self) -> None:
        return None


@dataclass
class Output:
    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, Any]]
    partition: int = 0  # as given to produce(partition=...), else 0
    offset: int = -1  # set when the "broker" took it (flush), counting aborted ones too


@dataclass
class _Queued:
    out: Output
    on_too_large: Callable[[], None] | None
    on_delivered: Callable[[int, int], None] | None = None


LANDED = "landed"  # a scripted commit failure after the commit really happened


@dataclass
class FakeSession:
    settings: Any
    stop: threading.Event
    on_revoke: Callable[[frozenset[Partition], str], None]
    on_assign: Callable[[frozenset[Partition]], None] = lambda _partitions: None
    heartbeat: Callable[[], None] = lambda: None
    producer_factory: Any = None
    lag_interval_s: float = 5.0
    # --- the "cluster"
    records: dict[Partition, list[Message]] = field(default_factory=dict)
    committed: Offsets = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    # --- scripting
    fail: dict[str, list[SessionError | tuple[SessionError, str] | None]] = field(default_factory=dict)
    broker_limit: int | None = None  # refuse a record batch holding a larger value
    producer_limit: int | None = None  # refuse at produce() a larger value
    consume_hook: Callable[[int], None] | None = None  # called with the consume call number
    rewind_unreadable: bool = False
    stop_when_drained: bool = True
    # --- observation
    calls: list[str] = field(default_factory=list)
    producers_created: int = 0
    closed_with_flush: bool | None = None

    def __post_init__(self) -> None:
        self._assigned: set[Partition] = set()
        self._position: Offsets = {}
        self._txn: list[Output] | None = None
        self._txn_offsets: Offsets = {}
        self._unflushed: list[_Queued] = []
        self._doomed = False
        self._consumes = 0
        self._polls = 0
        self._next_offset: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------ setup helpers
    def add(self, topic: str, partition: int, values: Sequence[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
        part = self.records.setdefault((topic, partition), [])
        for value, headers in values:
            part.append(cast(Message, FakeMessage(topic, partition, len(part), b"k", value, headers)))

    def revoke(self, partitions: set[Partition], why: str = "revoked") -> None:
        self._assigned -= partitions
        self.on_revoke(frozenset(partitions), why)

    def assign(self, partitions: set[Partition]) -> None:
        """As a rebalance would (inside poll/consume): from the committed offsets."""
        self._assigned |= partitions
        for tp in partitions:
            self._position[tp] = self.committed.get(tp, 0)
        self.on_assign(frozenset(partitions))

    def topic_outputs(self, topic: str) -> list[Output]:
        return [o for o in self.outputs if o.topic == topic]

    # ------------------------------------------------------------------ Session
    @property
    def assignment(self) -> frozenset[Partition]:
        return frozenset(self._assigned)

    @property
    def ready(self) -> bool:
        return self.producers_created > 0

    def start(self) -> bool:
        self.calls.append("start")
        self.producers_created += 1
        self._assigned = set(self.records)
        self._position = {tp: self.committed.get(tp, 0) for tp in self._assigned}
        self.on_assign(frozenset(self._assigned))
        return True

    def _next(self, n: int) -> list[Message]:
        got: list[Message] = []
        for tp in sorted(self._assigned):
            while len(got) < n and self._position[tp] < len(self.records[tp]):
                got.append(self.records[tp][self._position[tp]])
                self._position[tp] += 1
        return got

    def poll(self, timeout: float) -> Message | None:
        self._polls += 1
        assert self._polls < 10_000, "the loop does not terminate"
        got = self._next(1)
        if not got and self.stop_when_drained:
            self.stop.set()
        return got[0] if got else None

    def consume(self, max_records: int, timeout: float) -> list[Message]:
        self._consumes += 1
        if self.consume_hook is not None:
            self.consume_hook(self._consumes)
        return self._next(max_records)

    def _scripted(self, call: str) -> None:
        self.calls.append(call)
        queue = self.fail.get(call)
        if queue:
            failure = queue.pop(0)
            if failure is None:  # this call succeeds; a later one fails
                return
            if isinstance(failure, tuple):  # (error, LANDED): the call did its work, then failed
                self._apply()
                raise failure[0]
            raise failure

    def begin(self) -> None:
        assert self._txn is None, "begin with a transaction open"
        self._scripted("begin")
        self._txn, self._txn_offsets, self._doomed = [], {}, False

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Any,
                on_too_large: Callable[[], None] | None = None,
                on_delivered: Callable[[int, int], None] | None = None, partition: int | None = None) -> None:
        assert self._txn is not None, "produce outside a transaction"
        self.calls.append("produce")
        if self.producer_limit is not None and len(value) > self.producer_limit:
            raise RecordTooLarge(TxnAction.RECREATE, "MSG_SIZE_TOO_LARGE")
        out = Output(topic, value, key, list(headers), 0 if partition is None else partition)
        self._unflushed.append(_Queued(out, on_too_large, on_delivered))

    def flush(self) -> None:
        self.calls.append("flush")
        batch, self._unflushed = self._unflushed, []
        if self.broker_limit is not None and any(len(q.out.value) > self.broker_limit for q in batch):
            self._doomed = True  # the broker refuses the whole record batch
            for q in batch:
                if q.on_too_large is not None:
                    q.on_too_large()
            return
        if self._txn is not None:
            for q in batch:
                where = (q.out.topic, q.out.partition)
                q.out.offset = self._next_offset.get(where, 0)
                self._next_offset[where] = q.out.offset + 1
                if q.on_delivered is not None:
                    q.on_delivered(q.out.partition, q.out.offset)
            self._txn.extend(q.out for q in batch)

    def send_offsets(self, offsets: Offsets) -> None:
        self._scripted("send_offsets")
        self._txn_offsets = dict(offsets)

    def _apply(self) -> None:
        assert self._txn is not None
        self.outputs.extend(self._txn)
        self.committed.update(self._txn_offsets)
        self._txn = None

    def commit(self) -> None:
        self.flush()
        if self._doomed:
            self.calls.append("commit")
            raise SessionError(TxnAction.ABORT, "MSG_SIZE_TOO_LARGE: refused by the broker")
        self._scripted("commit")
        self._apply()

    def abort(self) -> None:
        self._scripted("abort")
        self._txn, self._unflushed = None, []

    def replace_producer(self) -> None:
        self.calls.append("replace_producer")
        self.producers_created += 1
        self._txn, self._unflushed = None, []

    def rewind(self) -> Offsets | None:
        self.calls.append("rewind")
        for tp in self._assigned:  # unreadable: TxnSession rebuilds the consumer, which
            self._position[tp] = self.committed.get(tp, 0)  # rejoins at the committed offsets
        if self.rewind_unreadable:
            return None
        return {tp: self.committed.get(tp, -1001) for tp in self._assigned}

    def update_lag(self) -> None:
        pass

    def close(self, *, flush: bool) -> None:
        self.calls.append("close")
        self.closed_with_flush = flush
