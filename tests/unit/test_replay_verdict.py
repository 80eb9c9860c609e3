"""``deadletter replay``'s verdict for a DUPLICATE (decision row 12): refused unless forced."""

from __future__ import annotations

import uuid

from processor.deadletter_replay import Candidate, verdict_now
from processor.reasons import Reason
from processor.registry.loader import parse_registry
from tests.builders import hl7_message, registry_text

REGISTRY = parse_registry(registry_text().encode())


def _candidate(reason: str, msh4: bytes = b"trustalias{trustalias}") -> Candidate:
    headers = {
        "hl7.ingest_id": str(uuid.uuid4()),
        "hl7.principal_id": "mailco",
        "hl7.principal_type": "partner",
        "hl7.received_at": "1700000000000000",
        "hl7.source_ip": "203.0.113.7",
        "hl7.transport": "http",
    }
    return Candidate("dl:0:1", reason, b"mailco|" + msh4, hl7_message(msh4, b"C1"), headers)


def test_a_duplicate_would_be_one_again() -> None:
    assert verdict_now(_candidate("DUPLICATE"), REGISTRY) is Reason.DUPLICATE


def test_other_dead_letters_the_registry_now_accepts_are_replayable() -> None:
    assert verdict_now(_candidate("PARTNER_NOT_AUTHORISED"), REGISTRY) is None


def test_a_duplicate_the_registry_now_refuses_names_that_reason() -> None:
    assert verdict_now(_candidate("DUPLICATE", b"nosuch{trustalias}"), REGISTRY) is Reason.UNKNOWN_CONNECTING_ALIAS
