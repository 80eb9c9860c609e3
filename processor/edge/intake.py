"""From an authenticated payload to the raw Kafka record and the ACK (pure, no I/O).

The edge keeps every decision about *what* to store and *what* to answer here,
so it is testable without HTTP or Kafka; ``app`` only moves bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from processor.decision import Accepted, decide
from processor.errors import MalformedHl7, NoMshSegment
from processor.hl7.ack import AckOutcome, ack_code, ack_codec, build_ack
from processor.hl7.charset import iana_name
from processor.hl7.header import MshHeader, read_header, salvage_header
from processor.raw import (
    HEADER_CHARSET,
    HEADER_INGEST_ID,
    HEADER_PRINCIPAL_ID,
    HEADER_PRINCIPAL_TYPE,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE_IP,
    HEADER_TRANSPORT,
    raw_record_key,
)
from processor.reasons import Reason
from processor.registry.model import Principal, Registry

__all__ = [
    "HL7_MEDIA_TYPES",
    "SOAP_MEDIA_TYPES",
    "MediaType",
    "parse_media_type",
    "OutgoingRecord",
    "Intake",
    "assess",
    "ack_control_id",
    "reply_ack",
    "STORAGE_FAILED_TEXT",
    "ack_text",
    "ack_content_type",
]

HL7_MEDIA_TYPES = frozenset({"application/hl7-v2", "x-application/hl7-v2+er7", "text/plain"})
SOAP_MEDIA_TYPES = frozenset({"text/xml"})  # SOAP 1.1

STORAGE_FAILED_TEXT = "Message not stored, retry later"


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed ``Content-Type``: lower-case type/subtype and the optional charset."""

    type: str
    charset: str | None


def parse_media_type(value: str | None) -> MediaType | None:
    """``type/subtype; charset=x`` -> MediaType; ``None`` when absent or not a media type."""
    if not value:
        return None
    main, *params = value.split(";")
    media = main.strip().lower()
    if media.count("/") != 1 or not all(media.split("/")):
        return None
    charset = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset":
            charset = val.strip().strip('"') or None
    return MediaType(media, charset)


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One ``hl7.raw`` record exactly as SPEC section 5 describes it."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Intake:
    """What the edge will store and how it will answer if storing succeeds."""

    ingest_id: str
    # For the reply and the key only: on a MALFORMED_HL7 rejection this is what
    # ``salvage_header`` could read (the decision itself saw no header).
    header: MshHeader | None
    outcome: AckOutcome  # ACCEPT or REJECT; a storage failure turns it into ERROR
    reason: Reason | None
    record: OutgoingRecord
    error_code: str | None = None  # table 0357 code refining MALFORMED_HL7 in the ERR

    @property
    def ack_code(self) -> str:
        return ack_code(self.header, self.outcome)


def assess(
    payload: bytes,
    registry: Registry,
    principal: Principal,
    *,
    transport: str,
    source_ip: str,
    received_at_us: int,
    ingest_id: str,
    default_charset: str | None = None,
) -> Intake:
    """Evaluate decision rows 4-11 and build the raw record.

    ``default_charset``: the request's HTTP charset as an MSH-18 name
    (``charset_from_http``); used when MSH-18 is empty and stored as ``hl7.charset``
    so the processor decides alike.

    Raises ``NoMshSegment`` (HTTP 400, nothing stored). Any other problem with the
    message is a rejection that is still stored, for the audit trail. When MSH is
    there but unreadable, the ACK and the key use what ``salvage_header`` recovers
    (the decision is unchanged: it never sees the salvaged header).
    """
    decision = decide(registry, principal.id, principal.type, payload, default_charset)
    header: MshHeader | None = decision.header
    err_code: str | None = None
    if isinstance(decision, Accepted):
        outcome, reason = AckOutcome.ACCEPT, None
    else:
        outcome, reason = AckOutcome.REJECT, decision.reason
        if header is None:
            # Only here is the header read a second time: to tell "no MSH at all"
            # (400, not stored) from a malformed one (stored, AR), and to learn
            # what kind of malformed it is; then salvage what is readable.
            try:
                header = read_header(payload, default_charset)
            except NoMshSegment:
                raise
            except MalformedHl7 as exc:
                if reason is Reason.MALFORMED_HL7:
                    err_code = exc.err_code
                header = salvage_header(payload, default_charset)
    msh4 = header.sending_facility_raw if header is not None else ""
    record = OutgoingRecord(
        # SPEC 5: UTF-8, a long MSH-4 hashed. MSH-4 bytes that did not decode (no MSH-18,
        # not UTF-8; such a message is rejected anyway) become U+FFFD in a kept MSH-4.
        key=raw_record_key(principal.id, msh4),
        value=payload,
        headers=(
            (HEADER_INGEST_ID, ingest_id.encode()),
            (HEADER_PRINCIPAL_ID, principal.id.encode()),
            (HEADER_PRINCIPAL_TYPE, str(principal.type.value).encode()),
            (HEADER_RECEIVED_AT, str(received_at_us).encode()),
            (HEADER_SOURCE_IP, source_ip.encode()),
            (HEADER_TRANSPORT, transport.encode()),
            *(((HEADER_CHARSET, default_charset.encode()),) if default_charset else ()),
        ),
    )
    return Intake(ingest_id, header, outcome, reason, record, err_code)


def ack_control_id(ingest_id: str) -> str:
    """The ACK's own MSH-10: 20 hex digits of the ingest id (fits ST(20) of v2.3-2.5)."""
    return ingest_id.replace("-", "")[:20]


def reply_ack(intake: Intake, *, stored: bool, now: datetime) -> tuple[bytes, str]:
    """The ACK bytes and its code: the intake's outcome if stored, else an error ACK."""
    if stored:
        outcome, reason, text = intake.outcome, intake.reason, None
    else:
        outcome, reason, text = AckOutcome.ERROR, None, STORAGE_FAILED_TEXT
    ack = build_ack(
        intake.header,
        outcome,
        control_id=ack_control_id(intake.ingest_id),
        timestamp=now,
        reason=reason,
        text=text,
        error_code=intake.error_code if reason is not None else None,
    )
    return ack, ack_code(intake.header, outcome)


def ack_text(ack: bytes, header: MshHeader | None) -> str:
    """An ACK built by ``build_ack`` (encoded per MSH-18) as text for the SOAP envelope."""
    return ack.decode(ack_codec(header), "replace")


def ack_content_type(media: MediaType, header: MshHeader | None) -> str:
    """The request's media type with the charset the ACK bytes are really in."""
    return f"{media.type}; charset={iana_name(ack_codec(header))}"
