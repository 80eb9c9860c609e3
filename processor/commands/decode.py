"""``hl7-processor decode TOPIC``: print the Avro records of a topic as JSON lines.

Reads with a ``read_committed`` consumer (only records of committed transactions,
as downstream services see them), assigned to every partition from the beginning
(unless the options below say otherwise) under a throwaway group id that never
commits. Each record becomes one JSON object on stdout, in the schema's field order,
plus Kafka metadata:

- ``_partition``, ``_offset``: where the record is;
- ``_key``: the Kafka key as UTF-8 text (invalid bytes as U+FFFD), or null.

Avro ``bytes`` (``payload``) are base64 (standard alphabet, padded); timestamp fields
are ISO-8601 UTC strings with microseconds, e.g. ``2026-11-27T10:43:44.123456Z``;
enums are their symbol names. Values that cannot be decoded are reported on stderr
(partition, offset, cause) and skipped; the exit status is then 1. Unusable options or
settings, or a topic / partition / offset that is not there, end the command with one
``hl7-processor: decode: ...`` line and exit 2; a fatal Kafka error with exit 1
(``processor.cli``).

Stops after ``--max`` records, or when no record arrived for ``--timeout`` seconds;
with ``--follow`` it keeps waiting for new records until SIGINT or SIGTERM (exit 0).

Options for the runbook:

- ``--no-payload``: the ``payload`` field (the HL7 message: patient data) is left out
  of every line; all other fields and their order are unchanged.
- ``--since TIME``: start, in each partition, at the first record whose Kafka timestamp
  is at or after TIME (ISO-8601, UTC when it carries no offset, or epoch seconds);
  ``offsets_for_times`` finds it. A partition with nothing that new starts at its end.
- ``--partition N``: read that partition only; ``--offset N`` (needs ``--partition``)
  starts there instead of at the beginning.
- ``--reason R`` (dead letters only) and ``--principal P``, both repeatable: print only
  records whose ``reason`` / ``principal_id`` is one of those given. Filters apply after
  decoding; ``--max`` counts printed records.

A progress bar (records read of those present at the start) appears on stderr only
when stderr is a terminal and stdout is not (output piped or redirected), only for
reads lasting over a second, and never with ``--follow``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from processor.avro.codec import AvroCodec
from processor.config import load_settings, require
from processor.errors import CommandFailed, InputError, KafkaUnavailable, UndecodableValue

__all__ = ["main", "json_value", "json_line", "parse_time"]

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_METADATA_TIMEOUT_SECONDS = 10.0
_OFFSET_BEGINNING = -2
_OFFSET_END = -1
_PROGRESS_DELAY_SECONDS = 1.0  # the bar shows only for reads that take longer
_EPOCH = re.compile(r"[0-9]+(\.[0-9]+)?")


def json_value(value: Any) -> Any:
    """A decoded Avro value as JSON-ready data (bytes -> base64, datetime -> ISO-8601 UTC)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def json_line(record: Mapping[str, Any], *, partition: int, offset: int, key: bytes | None) -> str:
    """One output line: the record's fields, then ``_partition``, ``_offset``, ``_key``."""
    out = json_value(record)
    out["_partition"] = partition
    out["_offset"] = offset
    out["_key"] = None if key is None else key.decode("utf-8", errors="replace")
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def parse_time(text: str) -> datetime:
    """``--since``: ISO-8601 (UTC when it carries no offset) or epoch seconds."""
    value = text.strip()
    if _EPOCH.fullmatch(value):
        return datetime.fromtimestamp(float(value), tz=UTC)
    try:
        when = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r} is neither an ISO-8601 time nor epoch seconds") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Options:
    follow: bool
    payload: bool
    since: datetime | None
    partition: int | None
    offset: int | None
    reasons: frozenset[str]
    principals: frozenset[str]


def _options(args: argparse.Namespace) -> _Options:
    """The reading options, validated (``ValueError`` = usage error, exit 2)."""
    from processor.reasons import REASON_CODES

    since_text = getattr(args, "since", None)
    partition = getattr(args, "partition", None)
    offset = getattr(args, "offset", None)
    reasons = frozenset(getattr(args, "reason", None) or ())
    if offset is not None and partition is None:
        raise ValueError("--offset needs --partition")
    if offset is not None and since_text is not None:
        raise ValueError("give --offset or --since, not both")
    if partition is not None and partition < 0:
        raise ValueError("--partition must be 0 or more")
    if offset is not None and offset < 0:
        raise ValueError("--offset must be 0 or more")
    unknown = sorted(reasons - set(REASON_CODES))
    if unknown:
        raise ValueError(f"unknown reason code(s): {', '.join(unknown)}")
    return _Options(
        follow=bool(getattr(args, "follow", False)),
        payload=not getattr(args, "no_payload", False),
        since=parse_time(since_text) if since_text is not None else None,
        partition=partition,
        offset=offset,
        reasons=reasons,
        principals=frozenset(getattr(args, "principal", None) or ()),
    )


def _wanted(record: Mapping[str, Any], options: _Options) -> bool:
    if options.reasons and record.get("reason") not in options.reasons:
        return False
    if options.principals and record.get("principal_id") not in options.principals:
        return False
    return True


@contextmanager
def _stop_on_signals(enabled: bool) -> Iterator[list[bool]]:
    """With ``enabled`` (``--follow``), SIGINT and SIGTERM set the flag (``flag[0]``) instead
    of interrupting; the previous handlers come back afterwards."""
    flag = [False]
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(_signum: int, _frame: object) -> None:
        flag[0] = True  # a plain store: safe whatever the main thread was doing

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _progress_wanted(options: _Options, stdout: IO[str]) -> bool:
    def tty(stream: IO[str]) -> bool:
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    return not options.follow and tty(sys.stderr) and not tty(stdout)


def main(args: argparse.Namespace, *, out: IO[str] | None = None) -> int:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from processor.kafka.client_config import consumer_config
    from processor.kafka.topic_reader import position

    stdout = out if out is not None else sys.stdout
    topic: str = args.topic
    limit: int | None = args.max
    idle_timeout = float(args.timeout)
    try:
        options = _options(args)
    except ValueError as exc:
        raise InputError(f"decode: {exc}") from None
    settings = load_settings()
    require(settings, "kafka_bootstrap_servers")
    if options.reasons and topic == settings.topic_accepted:
        raise InputError(f"decode: --reason applies to dead letters; {topic} holds accepted messages")
    codec = AvroCodec.from_settings(settings, register=False)
    conf = consumer_config(
        settings,
        **{
            "group.id": f"hl7-decode-{uuid.uuid4().hex}",
            "enable.partition.eof": False,
            "client.id": "hl7-processor-decode",
        },
    )

    from tqdm import tqdm

    consumer = Consumer(conf)
    printed = failed = skipped = not_dead_letters = 0
    try:
        metadata = consumer.list_topics(topic, timeout=_METADATA_TIMEOUT_SECONDS)
        topic_meta = metadata.topics.get(topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            cause = topic_meta.error.str() if topic_meta is not None and topic_meta.error else "no partitions"
            raise InputError(f"decode: topic {topic} unavailable: {cause}")
        partitions = sorted(topic_meta.partitions)
        if options.partition is not None:
            if options.partition not in topic_meta.partitions:
                raise InputError(
                    f"decode: topic {topic} has no partition {options.partition} (it has {len(partitions)})"
                )
            partitions = [options.partition]
        start = _start_offsets(consumer, topic, partitions, options)
        progress = _progress_wanted(options, stdout)
        total = _remaining(consumer, topic, start) if progress else None
        if total is not None and limit is not None and not (options.reasons or options.principals):
            total = min(total, limit)
        # assign() rather than subscribe(): no group join, no rebalance wait, no commits.
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        with (
            _stop_on_signals(options.follow) as stop,
            tqdm(
                total=total,
                desc=f"decoding {topic}",
                unit="rec",
                file=sys.stderr,
                leave=False,
                disable=not progress,
                delay=_PROGRESS_DELAY_SECONDS,
            ) as bar,
        ):
            last_record = time.monotonic()
            while (limit is None or printed + failed < limit) and not stop[0]:
                if options.follow:
                    wait = _POLL_SECONDS
                else:
                    idle = time.monotonic() - last_record
                    if idle >= idle_timeout:
                        break
                    wait = min(_POLL_SECONDS, idle_timeout - idle)
                msg = consumer.poll(wait)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    if error.fatal():
                        raise CommandFailed(f"decode: fatal Kafka error: {error.str()}")
                    print(f"decode: Kafka error: {error.str()}", file=sys.stderr)  # and reading goes on
                    continue
                last_record = time.monotonic()
                bar.update(1)
                partition, offset = position(msg)
                try:
                    record = codec.decode(msg.value() or b"")
                except UndecodableValue as exc:
                    failed += 1
                    print(f"decode: partition {partition} offset {offset}: {exc}", file=sys.stderr)
                    continue
                if options.reasons and "reason" not in record:
                    not_dead_letters += 1
                if not _wanted(record, options):
                    skipped += 1
                    continue
                if not options.payload:
                    record = {k: v for k, v in record.items() if k != "payload"}
                stdout.write(json_line(record, partition=partition, offset=offset, key=msg.key()))
                stdout.write("\n")
                stdout.flush()
                printed += 1
    finally:
        consumer.close()
    if not_dead_letters:
        print(
            f"decode: {not_dead_letters} record(s) are not dead letters (no reason field); --reason "
            "left them out",
            file=sys.stderr,
        )
    log.info("decode: %d records printed, %d filtered out, %d undecodable", printed, skipped, failed)
    if failed:
        raise CommandFailed(f"decode: {failed} value(s) could not be decoded (skipped, each named above)")
    return 0


def _start_offsets(consumer: Any, topic: str, partitions: list[int], options: _Options) -> dict[int, int]:
    """Where each partition starts. ``InputError`` for an offset past the end,
    ``KafkaUnavailable`` when Kafka cannot tell (both exit 2)."""
    from confluent_kafka import KafkaException, TopicPartition

    if options.offset is not None:
        (partition,) = partitions
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_METADATA_TIMEOUT_SECONDS
            )
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"decode: cannot look up partition {partition}: {exc.args[0].str()}"
            ) from None
        if options.offset > high:
            raise InputError(
                f"decode: offset {options.offset} is beyond the end of partition {partition} ({high})"
            )
        if options.offset < low:
            print(
                f"decode: offset {options.offset} of partition {partition} is gone (retention); "
                f"starting at {low}",
                file=sys.stderr,
            )
            return {partition: low}
        return {partition: options.offset}
    if options.since is not None:
        ms = int(options.since.timestamp() * 1000)
        try:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, ms) for p in partitions], timeout=_METADATA_TIMEOUT_SECONDS
            )
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"decode: cannot look up offsets for --since: {exc.args[0].str()}"
            ) from None
        problems = [tp for tp in found if tp.error is not None]
        if problems:
            raise KafkaUnavailable(
                f"decode: cannot look up offsets for --since in partition {problems[0].partition}: "
                f"{problems[0].error.str()}"
            )
        # offset -1: no record that new in the partition; start at its end (-1 = OFFSET_END).
        return {tp.partition: tp.offset if tp.offset >= 0 else _OFFSET_END for tp in found}
    return {p: _OFFSET_BEGINNING for p in partitions}


def _remaining(consumer: Any, topic: str, start: Mapping[int, int]) -> int | None:
    """Records between the start offsets and the current ends (for the progress bar)."""
    from confluent_kafka import KafkaException, TopicPartition

    total = 0
    try:
        for partition, offset in start.items():
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_METADATA_TIMEOUT_SECONDS
            )
            begin = (
                low if offset == _OFFSET_BEGINNING else high if offset == _OFFSET_END else max(offset, low)
            )
            total += max(high - begin, 0)
    except KafkaException:
        return None
    return total
