"""The shared corpus itself: loader, seed builder and patient markers."""

from __future__ import annotations

import pytest

from processor.hl7.header import read_header
from processor.hl7.msh4 import parse_msh4
from tests.corpus import PATIENT_MARKERS, SEED_MSH4, load, names, seed_message


def test_names_and_load() -> None:
    all_names = names()
    assert len(all_names) >= 12 and "adt_a01_v24_seed" in all_names
    assert load("adt_a01_v24_seed") == load("adt_a01_v24_seed.hl7") == seed_message()
    with pytest.raises(KeyError):
        load("../pyproject")


def test_versions_and_types_covered() -> None:
    headers = [read_header(load(n)) for n in names()]
    assert {h.version_id for h in headers} >= {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"}
    assert {(h.message_type, h.trigger_event) for h in headers} >= {
        ("ADT", "A01"), ("ORU", "R01"), ("ORM", "O01"), ("MDM", "T02"), ("SIU", "S12")}
    assert {h.segment_terminator for h in headers} == {"\r", "\n", "\r\n"}


def test_seed_message_parameters() -> None:
    msg = seed_message(msh4=b"a{b}", control_id=b"X-1")
    h = read_header(msg)
    assert (h.sending_facility_raw, h.message_control_id) == ("a{b}", "X-1")
    assert parse_msh4(read_header(seed_message()).msh4_namespace_id, customer_principal=False).connecting_alias == (
        SEED_MSH4.split(b"{")[0].decode())


@pytest.mark.parametrize("name", names())
def test_patient_markers_only_outside_msh(name: str) -> None:
    raw = load(name)
    assert any(m.encode() in raw for m in PATIENT_MARKERS)
    header_text = repr(read_header(raw))  # everything the gateway reads from MSH
    for marker in PATIENT_MARKERS:
        assert marker not in header_text
