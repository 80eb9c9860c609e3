"""Writing one routed output in the open transaction (the loop's produce step).

An output the producer refuses as too large becomes its payload-less dead letter in the same
transaction; one the broker refuses in a shared record batch is re-sent alone on the retry
(:class:`~processor.stream.oversize.OversizePolicy`, docs/stream.md "No record stops its
partition"). Row 12's bookkeeping (:mod:`processor.stream.dedupe_step`) hears where an
accepted output landed, and that a record was not accepted after all.
"""

from __future__ import annotations

import functools
import logging

from confluent_kafka import Message

from processor.errors import RecordTooLarge
from processor.kafka.session import Session
from processor.registry.model import Registry
from processor.stream.dedupe_step import DedupeStep, NoDedupe
from processor.stream.oversize import OversizePolicy
from processor.stream.records import coords, raw_record
from processor.stream.routing import Encoder, Routed, Topics, oversize_dead_letter

__all__ = ["OutputWriter"]

log = logging.getLogger(__name__)


class OutputWriter:
    """Produces routed outputs through ``session``, one at a time, inside a transaction."""

    def __init__(
        self, session: Session, oversize: OversizePolicy, dedupe: DedupeStep | NoDedupe, topics: Topics
    ) -> None:
        self._session = session
        self._oversize = oversize
        self._dedupe = dedupe
        self._topics = topics

    def write(
        self, msg: Message, out: Routed, registry: Registry, now_us: int, encode: Encoder | None
    ) -> Routed:
        """Write ``out``; one the producer refuses as too large becomes its slim dead letter."""
        session, policy, source = self._session, self._oversize, coords(msg)
        assert encode is not None
        out = self._dedupe.resolve(msg, out, registry, now_us, encode, session.flush)
        pend = self._dedupe.take_accepted(msg)  # row 12: hears where the accepted output landed
        on_delivered = pend.delivered if pend is not None else None
        alone = policy.alone(source)
        if alone:  # in a record batch of its own: whatever fails now is this record's fault
            session.flush()
        while True:
            try:
                session.produce(
                    out.topic,
                    out.value,
                    out.key,
                    out.headers,
                    on_too_large=functools.partial(policy.refused, source, alone),
                    on_delivered=on_delivered,
                )
                if alone:
                    session.flush()
                return out
            except RecordTooLarge:
                if policy.slim(source):
                    raise  # even the slim dead letter is refused: a broker problem, not the record's
                policy.refused(source, alone=True)
                log.warning("output for %s[%d]@%d too large; dead-lettering without payload", *source)
                if pend is not None:  # its slim dead letter replaces it: not accepted after all
                    self._dedupe.not_accepted(msg, pend)
                    pend = on_delivered = None
                out = oversize_dead_letter(  # the headers as routed: msg.headers() only once
                    raw_record(msg, out.headers),
                    registry,
                    now_us=now_us,
                    topics=self._topics,
                    encode=encode,
                    kafka_headers=out.headers,
                )
