"""The transport-neutral step every edge transport shares (HTTP, SOAP, MLLP).

From an authenticated principal's message bytes to the ACK: decision rows 4-11 and the
raw record (``intake.assess``), the store in ``hl7.raw`` with ``acks=all``
(``publisher``), then the ACK (``intake.reply_ack``): AA/CA only after Kafka has the
record, AR/CR with ERR for refusals, AE/CE when storing failed. Each transport only
moves bytes in and out and maps the result to its own wire (HTTP status, SOAP envelope,
MLLP frame).

Log lines carry the ingest id, principal id, transport, ACK code and reason only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from processor.config import Settings
from processor.edge.intake import Intake, ack_control_id, assess, reply_ack
from processor.edge.publisher import KafkaPublisher
from processor.errors import KafkaUnavailable
from processor.hl7.ack import AckOutcome, build_ack
from processor.reasons import Reason
from processor.registry.model import Principal, Registry

__all__ = ["Handled", "IntakePipeline", "no_msh_ack"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Handled:
    """One message handled: what was decided, whether Kafka has it, and the ACK."""

    intake: Intake
    stored: bool
    ack: bytes
    code: str  # MSA-1: AA, AR, AE, CA, CR or CE


class IntakePipeline:
    """Assess, store, acknowledge; one per edge process, shared by every transport."""

    def __init__(self, settings: Settings, publisher: KafkaPublisher) -> None:
        self._topic = settings.topic_raw
        self.publisher = publisher

    async def handle(
        self,
        payload: bytes,
        registry: Registry,
        principal: Principal,
        *,
        transport: str,
        source_ip: str,
        received_at_us: int,
        ingest_id: str,
        default_charset: str | None = None,
    ) -> Handled:
        """Raises ``NoMshSegment`` (nothing stored: each transport answers it its own way)."""
        intake = assess(
            payload,
            registry,
            principal,
            transport=transport,
            source_ip=source_ip,
            received_at_us=received_at_us,
            ingest_id=ingest_id,
            default_charset=default_charset,
        )
        stored = await self.store(intake)
        ack, code = reply_ack(intake, stored=stored, now=datetime.now(UTC))
        log.info(
            "ingest_id=%s principal=%s transport=%s stored=%s ack=%s reason=%s",
            ingest_id,
            principal.id,
            transport,
            stored,
            code,
            intake.reason.value if intake.reason else "-",
        )
        return Handled(intake, stored, ack, code)

    async def store(self, intake: Intake) -> bool:
        """``hl7.raw`` has the record (``acks=all``); False when Kafka could not take it."""
        record = intake.record
        try:
            await self.publisher.publish(self._topic, record.key, record.value, record.headers)
        except KafkaUnavailable as exc:
            log.warning("ingest_id=%s not stored: %s", intake.ingest_id, exc)
            return False
        return True


def no_msh_ack(ingest_id: str, now: datetime) -> bytes:
    """The AR to bytes with no MSH segment (MLLP, which has no "400"): SPEC 4's salvage rules
    with nothing to salvage, so default delimiters, version 2.5 and an empty MSA-2;
    ``MALFORMED_HL7`` with table 0357 code 100 (segment sequence error)."""
    return build_ack(
        None,
        AckOutcome.REJECT,
        control_id=ack_control_id(ingest_id),
        timestamp=now,
        reason=Reason.MALFORMED_HL7,
        error_code="100",
    )
