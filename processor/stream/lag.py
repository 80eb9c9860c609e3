"""Consumer lag per assigned ``hl7.raw`` partition, for ``hl7_processor_consumer_lag``.

Lag = the partition's high watermark (as last seen by the fetcher, no extra broker
round trip) minus this consumer's position. Updated at most every ``interval``
seconds from the processing loop (the consumer is not thread-safe to share), and
a partition's series is removed when it is revoked so a scaled-out group does not
report stale lag from a former owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from processor.metrics import PROCESSOR_CONSUMER_LAG

__all__ = ["LagTracker", "compute_lag"]

log = logging.getLogger(__name__)


def compute_lag(high_watermark: int, position: int) -> int | None:
    """Records behind, or ``None`` when either offset is not known yet (negative = logical)."""
    if high_watermark < 0 or position < 0:
        return None
    return max(0, high_watermark - position)


class LagTracker:
    """Periodic gauge updates; ``forget`` on revoke."""

    def __init__(self, interval: float = 5.0) -> None:
        self._interval = interval
        self._next = 0.0
        self._labels: set[str] = set()

    def maybe_update(self, consumer: Consumer, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self._interval
        try:
            assignment = consumer.assignment()
            if not assignment:
                return
            positions = consumer.position(assignment)
            for tp in positions:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), cached=True
                ) or (-1, -1)
                lag = compute_lag(high, tp.offset)
                if lag is None:
                    continue
                label = str(tp.partition)
                PROCESSOR_CONSUMER_LAG.labels(partition=label).set(lag)
                self._labels.add(label)
        except Exception as exc:  # noqa: BLE001 - lag is best effort, never stops processing
            log.debug("lag update failed: %s", type(exc).__name__)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            label = str(tp.partition)
            if label in self._labels:
                self._labels.discard(label)
                try:
                    PROCESSOR_CONSUMER_LAG.remove(label)
                except KeyError:
                    pass

    def forget_all(self) -> None:
        for label in list(self._labels):
            try:
                PROCESSOR_CONSUMER_LAG.remove(label)
            except KeyError:
                pass
        self._labels.clear()
