"""Dead-letter replay: re-publish chosen dead letters to ``hl7.raw``, at most once each.

Typical use: a partner was missing a grant, its messages were dead-lettered with
``PARTNER_NOT_AUTHORISED``; after the registry is fixed, support replays them.
Each chosen dead letter is first checked against the current registry exactly as
the processor would check it (row 1 and :func:`processor.decision.decide`): one that
would be refused again is reported and left alone (``force`` replays it anyway), so a
replay cannot loop. A ``DUPLICATE`` (decision row 12) is always refused without ``force``:
its original was accepted, so the processor would dead-letter it again (within the dedupe
window) or accept the same message a second time (after it). A dead letter without payload
(an output too large for Kafka, whose original stays in ``hl7.raw`` at ``source_offset``) is
never replayed.

At most once: each replayed dead letter is recorded in a compacted ledger topic
(``<dead-letter topic>.replayed``, key = the dead letter's topic:partition:offset)
in the same Kafka transaction as its re-published raw record, and dead letters
already in the ledger are skipped. A fixed ``transactional.id`` fences a second
replay started at the same time, so two operators cannot both publish.
The re-published record keeps its original key, bytes and headers (so the same
``hl7.ingest_id``) and adds ``hl7.replay_of`` and ``hl7.replayed_at``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from processor.config import Settings
from processor.decision import Rejected, decide
from processor.errors import KafkaUnavailable
from processor.raw import HEADER_CHARSET, HEADER_PRINCIPAL_TYPE, RawRecord
from processor.reasons import Reason
from processor.registry.model import Registry

__all__ = [
    "REPLAY_OF_HEADER",
    "REPLAYED_AT_HEADER",
    "ReplayCriteria",
    "Candidate",
    "ScanResult",
    "matches",
    "verdict_now",
    "replay_headers",
    "ledger_topic",
    "DeadLetterReplayer",
]

log = logging.getLogger(__name__)

REPLAY_OF_HEADER = "hl7.replay_of"
REPLAYED_AT_HEADER = "hl7.replayed_at"
_MARKERS = (REPLAY_OF_HEADER, REPLAYED_AT_HEADER)
_TRANSACTION_RECORDS = 200


@dataclass(frozen=True)
class ReplayCriteria:
    """Which dead letters to replay; an empty set or ``None`` means "any"."""

    reasons: frozenset[str] = field(default_factory=frozenset)
    principals: frozenset[str] = field(default_factory=frozenset)
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Candidate:
    """One dead letter chosen for replay."""

    coordinate: str
    reason: str
    key: bytes | None
    payload: bytes
    headers: Mapping[str, str]


@dataclass
class ScanResult:
    """What a scan found: the dead letters to replay and why others were left alone."""

    chosen: list[Candidate] = field(default_factory=list)
    already_replayed: int = 0
    without_payload: int = 0
    still_rejected: Counter[str] = field(default_factory=Counter)


def verdict_now(candidate: Candidate, registry: Registry) -> Reason | None:
    """The reason the processor would give this record today, or ``None`` if it would accept it.

    Row 12 cannot be asked without the processor's state: a ``DUPLICATE`` stays one.
    """
    from processor.stream.routing import metadata_problem

    raw = RawRecord(
        topic="",
        partition=-1,
        offset=-1,
        key=candidate.key,
        value=candidate.payload,
        headers=dict(candidate.headers),
    )
    if metadata_problem(raw) is not None:
        return Reason.MISSING_METADATA
    decision = decide(
        registry,
        raw.principal_id or "",
        raw.headers[HEADER_PRINCIPAL_TYPE],
        candidate.payload,
        raw.headers.get(HEADER_CHARSET) or None,
    )
    if isinstance(decision, Rejected):
        return decision.reason
    if candidate.reason == Reason.DUPLICATE:  # row 12: its original was accepted already
        return Reason.DUPLICATE
    return None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def matches(dead_letter: Mapping[str, Any], criteria: ReplayCriteria) -> bool:
    """Does a decoded dead-letter record meet the criteria?"""
    if criteria.reasons and dead_letter.get("reason") not in criteria.reasons:
        return False
    if criteria.principals and dead_letter.get("principal_id") not in criteria.principals:
        return False
    at = dead_letter.get("dead_lettered_at")
    if criteria.since is not None and (at is None or _utc(at) < _utc(criteria.since)):
        return False
    if criteria.until is not None and (at is None or _utc(at) >= _utc(criteria.until)):
        return False
    return True


def coordinate_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def replay_headers(
    original: Mapping[str, str], coordinate: str, replayed_at_us: int
) -> list[tuple[str, str | bytes | None]]:
    """The original raw headers, minus any older replay marker, plus this replay's marker
    (as bytes; typed as ``Producer.produce`` takes them)."""
    headers: list[tuple[str, str | bytes | None]] = [
        (k, v.encode()) for k, v in original.items() if k not in _MARKERS
    ]
    headers.append((REPLAY_OF_HEADER, coordinate.encode()))
    headers.append((REPLAYED_AT_HEADER, str(replayed_at_us).encode()))
    return headers


def ledger_topic(settings: Settings) -> str:
    """The compacted replay ledger; defined with the other topics in ``processor.kafka.topics``."""
    from processor.kafka.topics import ledger_topic as defined

    return defined(settings)


Progress = Callable[[int], object]  # the result is ignored (tqdm.update returns one)


class DeadLetterReplayer:
    """Scans the dead-letter topic and re-publishes the chosen records transactionally."""

    def __init__(self, settings: Settings) -> None:
        from processor.avro.codec import AvroCodec

        self._settings = settings
        self._codec = AvroCodec.from_settings(settings, register=False)

    def _ensure_ledger(self) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient

        from processor.kafka.client_config import admin_config
        from processor.kafka.topics import ledger_spec

        # The same definition `topics create` uses (compacted, one partition).
        spec = ledger_spec(self._settings)
        topic = spec.name
        admin = AdminClient(admin_config(self._settings))
        new = spec.new_topic()
        try:
            admin.create_topics([new])[topic].result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaUnavailable(
                    f"cannot create the replay ledger {topic}: {exc.args[0].name()}"
                ) from None
        except TimeoutError:
            raise KafkaUnavailable(
                f"Kafka at {self._settings.kafka_bootstrap_servers} did not answer within 30 s"
            ) from None

    def _consumer_conf(self) -> dict[str, Any]:
        from processor.kafka.client_config import consumer_config

        return consumer_config(self._settings)

    def replayed(self) -> set[str]:
        """Coordinates of dead letters that were already replayed."""
        from processor.kafka.topic_reader import read_to_end

        self._ensure_ledger()
        return {
            key.decode()
            for msg in read_to_end(self._consumer_conf(), ledger_topic(self._settings))
            if (key := msg.key()) is not None and msg.value() is not None
        }

    def scan(
        self, criteria: ReplayCriteria, registry: Registry | None, progress: Progress | None = None
    ) -> ScanResult:
        """Dead letters meeting the criteria, not yet replayed, and (with a registry)
        acceptable under it now; ``registry=None`` skips that check (forced replay)."""
        from processor.errors import UndecodableValue
        from processor.kafka.topic_reader import position, read_to_end

        done = self.replayed()
        result = ScanResult()
        topic = self._settings.topic_deadletter
        for msg in read_to_end(self._consumer_conf(), topic):
            if progress:
                progress(1)
            coordinate = coordinate_of(topic, *position(msg))
            value = msg.value()
            if value is None:
                log.warning("dead letter %s has no value (a tombstone); skipped", coordinate)
                continue
            try:
                record = self._codec.decode(value)
            except UndecodableValue:
                log.warning("dead letter %s is not decodable; skipped", coordinate)
                continue
            if not matches(record, criteria):
                continue
            if coordinate in done:
                result.already_replayed += 1
                continue
            candidate = Candidate(
                coordinate=coordinate,
                reason=str(record.get("reason")),
                key=msg.key(),
                payload=bytes(record["payload"]),
                headers=dict(record.get("headers") or {}),
            )
            if not candidate.payload:
                result.without_payload += 1
                continue
            if registry is not None:
                now = verdict_now(candidate, registry)
                if now is not None:
                    result.still_rejected[now.value] += 1
                    continue
            result.chosen.append(candidate)
        return result

    def publish(self, candidates: Sequence[Candidate], progress: Progress | None = None) -> int:
        """Re-publish to the raw topic, each with its ledger entry in the same transaction."""
        from confluent_kafka import Producer

        from processor.kafka.client_config import producer_config

        producer = Producer(
            producer_config(
                self._settings, **{"transactional.id": f"{self._settings.consumer_group}-deadletter-replay"}
            )
        )
        producer.init_transactions(30)
        # init_transactions fenced any other replay run (same transactional.id) and settled
        # its open transaction: read the ledger again, so what it replayed after our scan
        # is not replayed twice.
        done = self.replayed()
        fresh = [cand for cand in candidates if cand.coordinate not in done]
        if len(fresh) != len(candidates):
            log.warning(
                "%d dead letter(s) were replayed by another run since the scan; skipped",
                len(candidates) - len(fresh),
            )
        candidates = fresh
        ledger = ledger_topic(self._settings)
        published = 0
        batch: list[Candidate] = []

        def flush_batch() -> None:
            nonlocal published
            if not batch:
                return
            producer.begin_transaction()
            now_us = time.time_ns() // 1000
            for cand in batch:
                producer.produce(
                    self._settings.topic_raw,
                    value=cand.payload,
                    key=cand.key,
                    headers=replay_headers(cand.headers, cand.coordinate, now_us),
                )
                producer.produce(ledger, key=cand.coordinate.encode(), value=str(now_us).encode())
            producer.commit_transaction(60)
            published += len(batch)
            if progress:
                progress(len(batch))
            batch.clear()

        for cand in candidates:
            batch.append(cand)
            if len(batch) >= _TRANSACTION_RECORDS:
                flush_batch()
        flush_batch()
        return published
