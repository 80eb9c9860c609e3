"""Record builders: fields that are null rather than "", MSH-18 carried over, and the
principal-type enum symbol.

Written to kill mutants that survived ``make mutation`` (docs/mutation.md).
"""

from __future__ import annotations

import pytest

from processor.avro.records import accepted_record, dead_letter_record, principal_type_symbol
from processor.decision import Accepted
from processor.hl7.header import read_header
from processor.raw import RawRecord
from processor.reasons import Reason
from processor.registry.model import PrincipalType

HEADERS = {
    "hl7.ingest_id": "5b0b7e3c-3d8e-4a55-9a0e-6a1b2c3d4e5f",
    "hl7.principal_id": "mailco",
    "hl7.principal_type": "partner",
    "hl7.received_at": "1795776224123456",
    "hl7.source_ip": "203.0.113.7",
    "hl7.transport": "http",
}


def _raw(value: bytes) -> RawRecord:
    return RawRecord("hl7.raw", 0, 7, b"k", value, dict(HEADERS))


def test_dead_letter_writes_empty_msh_fields_as_null() -> None:
    payload = b"MSH|^~\\&|APP||||20240101||ADT|C1|P|2.5\rPID|1\r"  # empty MSH-4, no trigger event
    record = dead_letter_record(
        reason=Reason.MSH4_MISSING,
        detail="MSH-4.1 is empty",
        raw=_raw(payload),
        dead_lettered_at_us=1,
        registry_version="v1",
        header=read_header(payload),
    )
    assert record["sending_facility"] is None
    assert record["trigger_event"] is None
    assert record["message_type"] == "ADT" and record["message_control_id"] == "C1"
    assert record["reason"] == "MSH4_MISSING"


def test_accepted_record_carries_msh18() -> None:
    payload = b"MSH|^~\\&|APP|ta{ta}|||20240101||ADT^A01|C1|P|2.5||||||8859/1\rPID|1\r"
    decision = Accepted(read_header(payload), "trust-1", "ta", "trust-1", "ta", "v1")
    record = accepted_record(decision, _raw(payload), 2)
    assert record["character_set"] == "8859/1"


@pytest.mark.parametrize(
    ("value", "symbol"),
    [
        (PrincipalType.PARTNER, "PARTNER"),
        (PrincipalType.CUSTOMER, "CUSTOMER"),
        ("partner", "PARTNER"),
        ("Customer", "CUSTOMER"),
        ("admin", None),
        (None, None),
        (3, None),
    ],
)
def test_principal_type_symbol(value: object, symbol: str | None) -> None:
    assert principal_type_symbol(value) == symbol
