"""Reading the dedupe changelog back: one partition, committed records only, to its end.

:class:`ChangelogReader` is what the processor calls when a raw partition is assigned: it
reads the changelog partition with the same number from the beginning, ``read_committed``,
until the consumer's position reaches the end offset (high watermark) taken when the read
started. The position also moves past aborted records and transaction markers, so "at the
end" never depends on the last record being visible; and while a transaction of the
partition's previous owner is still open, ``read_committed`` cannot pass it: the read waits
until that transaction is committed or aborted (at most the transaction timeout), exactly
as the raw consumer's ``committed()`` with ``require_stable`` does. So the state restored
holds every entry the previous owner committed and none it aborted.

The reader is an assigned consumer under the processors' own group id (the processor role
already has READ on that group): it never subscribes, joins or commits.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from processor.config import Settings
from processor.errors import ConfigError, KafkaUnavailable
from processor.kafka.client_config import consumer_config
from processor.stream.dedupe import Entry
from processor.stream.dedupe_codec import decode
from processor.stream.txn_errors import error_name

__all__ = ["ChangelogReader"]

log = logging.getLogger(__name__)

_BATCH = 10_000


class ChangelogReader:
    """Reads changelog partitions for restore (one thread: the loop's)."""

    def __init__(self, settings: Settings, *, consumer_factory: Any = Consumer) -> None:
        self._settings = settings
        self._topic = settings.dedupe_topic
        self._factory = consumer_factory
        self._consumer: Consumer | None = None
        # Longest wait for a previous owner's open transaction to end, plus slack.
        self._timeout_s = settings.transaction_timeout_ms / 1000.0 + 60.0
        self.skipped = 0  # records this release does not understand (a later value version)

    def _client(self) -> Consumer:
        if self._consumer is None:
            conf = consumer_config(
                self._settings,
                **{
                    "enable.partition.eof": False,
                    "client.id": f"hl7-dedupe-restore-{uuid.uuid4().hex[:8]}",
                    "fetch.max.bytes": 52_428_800,
                    "max.partition.fetch.bytes": 10_485_760,
                },
            )
            conf.pop("group.protocol", None)  # never joins: the group protocol does not apply
            conf.pop("group.remote.assignor", None)
            self._consumer = self._factory(conf)
        return self._consumer

    def check(self) -> None:
        """``ConfigError`` unless the changelog exists with as many partitions as the raw topic."""
        consumer = self._client()
        counts: dict[str, int] = {}
        for topic in (self._settings.topic_raw, self._topic):
            try:
                meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
            except KafkaException as exc:
                raise KafkaUnavailable(f"cannot describe topic {topic}: {error_name(exc)}") from None
            if meta is None or meta.error is not None or not meta.partitions:
                if topic == self._topic:
                    raise ConfigError(
                        f"the dedupe changelog {topic} does not exist: run `hl7-processor topics create` "
                        "(or set HL7_DEDUPE_ENABLED=false)"
                    )
                return  # no raw topic yet: nothing to compare (the consumer waits for it)
            counts[topic] = len(meta.partitions)
        if counts[self._topic] != counts[self._settings.topic_raw]:
            raise ConfigError(
                f"the dedupe changelog {self._topic} has {counts[self._topic]} partitions, "
                f"{self._settings.topic_raw} has {counts[self._settings.topic_raw]}: they must be equal "
                "(see docs/stream.md, Dedupe)"
            )

    def read(self, partition: int) -> Iterator[Entry]:
        """Every committed entry of ``partition`` in log order.

        Raises :class:`KafkaUnavailable` when the end is not reached in time.
        """
        consumer = self._client()
        tp = TopicPartition(self._topic, partition)
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=30, cached=False)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"cannot read the end of {self._topic}[{partition}]: {error_name(exc)}"
            ) from None
        if high <= max(low, 0):
            return
        consumer.assign([TopicPartition(self._topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + self._timeout_s
        try:
            while True:
                for msg in consumer.consume(_BATCH, 0.5):
                    if msg.error() is not None:
                        if msg.error().fatal():  # type: ignore[union-attr]
                            raise KafkaUnavailable(f"restore of {self._topic}[{partition}]: {msg.error()}")
                        continue
                    entries = decode(msg.value())
                    if entries is None:
                        self.skipped += 1
                        log.warning(
                            "dedupe changelog %s[%d]@%s: a record this release does not read; skipped",
                            self._topic,
                            partition,
                            msg.offset(),
                        )
                        continue
                    yield from entries
                position = consumer.position([TopicPartition(self._topic, partition)])[0].offset
                if position >= high:
                    return
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"restore of {self._topic}[{partition}] did not reach offset {high} "
                        f"(at {position}) within {self._timeout_s:.0f} s"
                    )
        finally:
            consumer.unassign()

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                log.debug("closing the restore consumer failed", exc_info=True)
