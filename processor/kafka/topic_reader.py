"""Reading a whole topic, every partition, from the beginning to its current end.

Used by tools (dead-letter replay) that must see everything that is committed now
and then stop: ``enable.partition.eof`` tells when each partition is drained, so
no idle timeout has to be guessed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

__all__ = ["read_to_end", "position"]

_OFFSET_BEGINNING = -2


def read_to_end(conf: dict[str, Any], topic: str, *, timeout: float = 10.0) -> Iterator[Message]:
    """Yield every committed record of ``topic`` once, then stop.

    ``conf`` is a consumer config (``read_committed`` recommended); a throwaway
    group id is set and nothing is committed.
    """
    consumer = Consumer(
        {
            **conf,
            "group.id": f"hl7-reader-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(
                meta.error if meta is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
            )
        pending = set(meta.partitions)
        consumer.assign([TopicPartition(topic, p, _OFFSET_BEGINNING) for p in sorted(pending)])
        while pending:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                yield msg
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
            elif error.fatal():
                raise KafkaException(error)
    finally:
        consumer.close()


def position(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a record a consumer returned: librdkafka sets both on every
    one (``Message`` annotates them Optional for the produced and error cases)."""
    partition, offset = msg.partition(), msg.offset()
    if partition is None or offset is None:
        raise ValueError("not a consumed record: no partition or offset")
    return partition, offset
