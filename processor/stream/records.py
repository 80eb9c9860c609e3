"""A consumed ``confluent_kafka.Message`` as the routing core sees it (hot path, no I/O)."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, cast

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from processor.raw import RawRecord, decode_headers

__all__ = ["coords", "end_offsets", "kafka_headers", "raw_record", "bare_raw_record"]


def coords(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record (never None for a record without error)."""
    return cast(str, msg.topic()), cast(int, msg.partition()), cast(int, msg.offset())


def end_offsets(batch: Iterable[Message]) -> dict[tuple[str, int], int]:
    """The offsets to commit for ``batch``: last offset + 1 per partition."""
    ends: dict[tuple[str, int], int] = {}
    for msg in batch:
        ends[(cast(str, msg.topic()), cast(int, msg.partition()))] = cast(int, msg.offset()) + 1
    return ends


# ``msg.headers()`` called through methodcaller, i.e. through C's PyObject_Call, never
# as a plain ``msg.headers()`` in Python code. Why: for a header *name* that is not
# UTF-8, confluent-kafka (2.x) returns a list holding a NULL name *and* leaves the
# UnicodeDecodeError set. PyObject_Call checks for that and raises SystemError; the
# interpreter's specialised fast path for a hot ``msg.headers()`` call site does not
# (CPython 3.11+), so the broken list would reach Python and crash the process on
# first touch (seen: SIGSEGV). Also: call it once per message; a second call returns
# the cached broken list with no error at all.
_read_headers = operator.methodcaller("headers")


def kafka_headers(msg: Message) -> list[tuple[str, Any]] | None:
    """The record's headers; ``None`` when confluent-kafka cannot return them (a header
    name that is not UTF-8). Never raises. Call at most once per message (see above)."""
    try:
        return cast("list[tuple[str, Any]]", _read_headers(msg) or [])
    except Exception:  # noqa: BLE001 - SystemError (with the UnicodeDecodeError as cause)
        return None


def raw_record(msg: Message, headers: list[tuple[str, Any]] | None) -> RawRecord:
    """The raw record of ``msg`` with ``headers`` as read by :func:`kafka_headers`."""
    ts_type, ts = msg.timestamp()
    return RawRecord(
        cast(str, msg.topic()),
        cast(int, msg.partition()),
        cast(int, msg.offset()),
        msg.key(),
        msg.value() or b"",
        decode_headers(headers),
        None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
    )


def bare_raw_record(msg: Message) -> RawRecord:
    """Coordinates, key and value only: the last resort when building the raw record failed."""
    topic, partition, offset = coords(msg)
    return RawRecord(topic, partition, offset, msg.key(), msg.value() or b"", {})
