"""``hl7-processor decode TOPIC``: print the Avro records of a topic as JSON lines.

Reads with a ``read_committed`` consumer (only records of committed transactions,
as downstream services see them), assigned to every partition from the beginning
under a throwaway group id that never commits. Each record becomes one JSON object
on stdout, in the schema's field order, plus Kafka metadata:

- ``_partition``, ``_offset``: where the record is;
- ``_key``: the Kafka key as UTF-8 text (invalid bytes as U+FFFD), or null.

Avro ``bytes`` (``payload``) are base64 (standard alphabet, padded); timestamp fields
are ISO-8601 UTC strings with microseconds, e.g. ``2026-11-27T10:43:44.123456Z``;
enums are their symbol names. Values that cannot be decoded are reported on stderr
(partition, offset, cause) and skipped; the exit status is then 1.

Stops after ``--max`` records, or when no record arrived for ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import IO, Any

from processor.avro.codec import AvroCodec, UndecodableValue
from processor.config import load_settings
from processor.errors import ConfigError

__all__ = ["main", "json_value", "json_line"]

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_METADATA_TIMEOUT_SECONDS = 10.0


def json_value(value: Any) -> Any:
    """A decoded Avro value as JSON-ready data (bytes -> base64, datetime -> ISO-8601 UTC)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        utc = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
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


def main(args: argparse.Namespace, *, out: IO[str] | None = None) -> int:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from processor.kafka.client_config import consumer_config

    stdout = out if out is not None else sys.stdout
    topic: str = args.topic
    limit: int | None = args.max
    idle_timeout = float(args.timeout)
    settings = load_settings()
    try:
        codec = AvroCodec.from_settings(settings, register=False)
        conf = consumer_config(
            settings,
            **{
                "group.id": f"hl7-decode-{uuid.uuid4().hex}",
                "enable.partition.eof": False,
                "client.id": "hl7-processor-decode",
            },
        )
    except ConfigError as exc:
        print(f"decode: {exc}", file=sys.stderr)
        return 2

    consumer = Consumer(conf)
    printed = failed = 0
    try:
        metadata = consumer.list_topics(topic, timeout=_METADATA_TIMEOUT_SECONDS)
        topic_meta = metadata.topics.get(topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            cause = topic_meta.error.str() if topic_meta is not None and topic_meta.error else "no partitions"
            print(f"decode: topic {topic} unavailable: {cause}", file=sys.stderr)
            return 2
        # assign() rather than subscribe(): no group join, no rebalance wait, no commits.
        consumer.assign(
            [TopicPartition(topic, p, -2) for p in sorted(topic_meta.partitions)]  # -2 = OFFSET_BEGINNING
        )
        last_record = time.monotonic()
        while limit is None or printed + failed < limit:
            idle = time.monotonic() - last_record
            if idle >= idle_timeout:
                break
            msg = consumer.poll(min(_POLL_SECONDS, idle_timeout - idle))
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                print(f"decode: Kafka error: {error.str()}", file=sys.stderr)
                if error.fatal():
                    return 1
                continue
            last_record = time.monotonic()
            try:
                record = codec.decode(msg.value() or b"")
            except UndecodableValue as exc:
                failed += 1
                print(f"decode: partition {msg.partition()} offset {msg.offset()}: {exc}", file=sys.stderr)
                continue
            stdout.write(json_line(record, partition=msg.partition(), offset=msg.offset(), key=msg.key()))
            stdout.write("\n")
            stdout.flush()
            printed += 1
    finally:
        consumer.close()
    log.info("decode: %d records printed, %d undecodable", printed, failed)
    return 1 if failed else 0
