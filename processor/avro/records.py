"""Build the Avro-shaped dicts for ``hl7.accepted`` and ``hl7.deadletter`` (pure).

The dict keys are the schema field names in ``schemas/*.avsc``; timestamps are epoch
microseconds (``int``) so the caller's clock is the only clock. Accepted records are
built only after decision row 1 passed, so a missing required header there is a bug
and raises ``ValueError``; dead letters must be buildable from anything, so every
header-derived field there is optional and nothing raises for bad input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processor.raw import (
    HEADER_INGEST_ID,
    HEADER_PRINCIPAL_ID,
    HEADER_PRINCIPAL_TYPE,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE_IP,
    HEADER_TRANSPORT,
    RawRecord,
)
from processor.reasons import REASON_CODES, Reason

if TYPE_CHECKING:  # imported for types only: keeps this module free of HL7/registry imports
    from processor.decision import Accepted
    from processor.hl7.header import MshHeader

__all__ = ["RawRecord", "accepted_record", "dead_letter_record", "principal_type_symbol"]

_PRINCIPAL_TYPES = {"partner": "PARTNER", "customer": "CUSTOMER"}


def principal_type_symbol(value: object) -> str | None:
    """Avro enum symbol for a ``hl7.principal_type`` header / ``PrincipalType`` value."""
    text = getattr(value, "value", value)
    if not isinstance(text, str):
        return None
    return _PRINCIPAL_TYPES.get(text.lower())


def _optional(value: str | None) -> str | None:
    return value if value else None


def accepted_record(
    decision: Accepted, raw: RawRecord, processed_at_us: int, *, received_at_us: int | None = None
) -> dict[str, Any]:
    """The ``AcceptedMessage`` for a raw record the decision table accepted.

    ``received_at_us``: ``raw.received_at_us`` when the caller has already parsed it.
    """
    header = decision.header
    headers = raw.headers
    try:  # one lookup each; a missing one is a bug upstream (row 1 checks them)
        principal_type = _PRINCIPAL_TYPES.get(headers[HEADER_PRINCIPAL_TYPE].lower())
        ingest_id = headers[HEADER_INGEST_ID]
        principal_id = headers[HEADER_PRINCIPAL_ID]
        transport = headers[HEADER_TRANSPORT]
        source_ip = headers[HEADER_SOURCE_IP]
    except KeyError as exc:
        # Names the header only: values may be attacker-controlled or personal.
        raise ValueError(f"accepted record needs header {exc.args[0]}") from None
    if principal_type is None:
        raise ValueError(f"accepted record needs header {HEADER_PRINCIPAL_TYPE} = partner|customer")
    received_at = raw.received_at_us if received_at_us is None else received_at_us
    if received_at is None:
        raise ValueError(f"accepted record needs header {HEADER_RECEIVED_AT} = epoch micros")
    # ``x or None``: empty optional strings are written as null (absent), not "".
    return {
        "ingest_id": ingest_id,
        "received_at": received_at,
        "processed_at": int(processed_at_us),
        "principal_id": principal_id,
        "principal_type": principal_type,
        "connecting_customer_id": decision.connecting_customer_id,
        "connecting_alias": decision.connecting_alias,
        "data_controller_id": decision.data_controller_id,
        "data_controller_alias": decision.data_controller_alias,
        "registry_version": decision.registry_version,
        "message_type": header.message_type,
        "trigger_event": header.trigger_event or None,
        "message_control_id": header.message_control_id,
        "hl7_version": header.version_id,
        "sending_application": header.sending_application or None,
        "sending_facility": header.sending_facility_raw,
        "transport": transport,
        "source_ip": source_ip,
        "source_topic": raw.topic,
        "source_partition": raw.partition,
        "source_offset": raw.offset,
        "payload": raw.value,
        "message_structure": header.message_structure or None,
        "message_datetime": header.message_datetime or None,
        "processing_id": header.processing_id_raw or None,
        "character_set": header.character_set or None,
    }


def _reason_symbol(reason: Reason | str) -> str:
    text = reason.value if isinstance(reason, Reason) else str(reason)
    if text not in REASON_CODES:
        raise ValueError(f"unknown reason code {text!r}")
    return text


def dead_letter_record(
    *,
    reason: Reason | str,
    detail: str,
    raw: RawRecord,
    dead_lettered_at_us: int,
    registry_version: str,
    header: MshHeader | None,
) -> dict[str, Any]:
    """The ``DeadLetter`` for a raw record that was not accepted.

    ``header`` is the parsed MSH when it could be read (``None`` otherwise). Header
    fields are taken when present; ``received_at`` only when ``parse_epoch_micros`` accepts it.
    Raises ``ValueError`` only for an unknown reason code (a programming error).
    """
    return {
        "ingest_id": raw.header(HEADER_INGEST_ID),
        "received_at": raw.received_at_us,
        "dead_lettered_at": int(dead_lettered_at_us),
        "reason": _reason_symbol(reason),
        "detail": detail,
        "principal_id": raw.header(HEADER_PRINCIPAL_ID),
        "sending_facility": _optional(header.sending_facility_raw) if header is not None else None,
        "message_control_id": _optional(header.message_control_id) if header is not None else None,
        "registry_version": registry_version,
        "source_topic": raw.topic,
        "source_partition": raw.partition,
        "source_offset": raw.offset,
        "headers": dict(raw.headers),
        "payload": raw.value,
        "message_type": _optional(header.message_type) if header is not None else None,
        "trigger_event": _optional(header.trigger_event) if header is not None else None,
    }
