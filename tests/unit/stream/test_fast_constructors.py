"""The slot-descriptor constructors on the hot path build the same frozen values as ``__init__``."""

from __future__ import annotations

import dataclasses

import pytest

from processor.avro.raw import RawRecord
from processor.reasons import Reason
from processor.stream.records import _raw_record
from processor.stream.routing import Routed, _routed


def test_routed_equals_init_and_stays_frozen() -> None:
    values = ("deadletter", "t", b"k", b"v", [("h", b"1")], Reason.MALFORMED_HL7, "d", "p", 7)
    fast = _routed(*values)
    assert fast == Routed(*values) and hash(fast.reason) == hash(Reason.MALFORMED_HL7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.topic = "x"  # type: ignore[misc]


def test_raw_record_equals_init_and_stays_frozen() -> None:
    values = ("hl7.raw", 2, 41, None, b"MSH|", {"hl7.ingest_id": "i"}, None)
    fast = _raw_record(*values)
    assert fast == RawRecord(*values)
    assert fast.ingest_id == "i" and fast.missing_headers
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.offset = 0  # type: ignore[misc]
