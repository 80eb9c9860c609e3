"""ACK builder: content rules of SPEC 4 and hl7apy validation per version."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message, parse_segment

from processor.hl7.ack import AckOutcome, ack_code, build_ack, error_code
from processor.hl7.header import read_header
from processor.reasons import Reason
from tests.corpus import PATIENT_MARKERS, load, names, seed_message

TS = datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
VERSIONS = ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2"]  # hl7apy has no 2.7.1
CASES = [
    (AckOutcome.ACCEPT, None, None),
    (AckOutcome.ACCEPT, None, "stored"),
    (AckOutcome.REJECT, Reason.MSH4_SYNTAX, "MSH-4 syntax | not alias{alias} & co"),
    (AckOutcome.REJECT, Reason.PARTNER_NOT_AUTHORISED, None),
    (AckOutcome.REJECT, Reason.MALFORMED_HL7, "bad"),
    (AckOutcome.ERROR, Reason.PROCESSING_ERROR, "storage unavailable, retry"),
    (AckOutcome.ERROR, None, "Message not stored, retry later"),  # the edge's 503 reply
]


def _message(version: str, *, msh15: str = "", msh4: str = "ta{tb}", control: str = "MSG1") -> bytes:
    return (
        f"MSH|^~\\&|PAS|{msh4}|PKB|PKBFAC|20240115||ADT^A01^ADT_A01|{control}|T|{version}|||{msh15}|NE\r"
        "EVN|A01|20240115\rPID|1||ZZT0000001||ZZTESTPATIENT^ZZTESTFIRST\r"
    ).encode()


def _strict_parse(ack: bytes) -> Message:
    """hl7apy strict parse + validate. hl7apy cannot derive the ACK structure from
    MSH-9 in 2.3 (``ACK^A01`` has no structure component there), so for 2.3 the
    segments are parsed strictly into an explicit ACK message instead."""
    text = ack.decode()
    version = read_header(ack).version_id
    if version == "2.3":
        m = Message("ACK", version="2.3", validation_level=VALIDATION_LEVEL.STRICT)
        for seg in text.rstrip("\r").split("\r"):
            parsed = parse_segment(seg, version="2.3", validation_level=VALIDATION_LEVEL.STRICT)
            if parsed.name == "MSH":
                m.msh = parsed  # replaces the MSH hl7apy creates with the message
            else:
                m.add(parsed)
    else:
        m = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    m.validate()
    return m


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("enhanced", [False, True], ids=["original", "enhanced"])
@pytest.mark.parametrize(("outcome", "reason", "text"), CASES)
def test_ack_validates_with_hl7apy(version: str, enhanced: bool, outcome: AckOutcome,
                                   reason: Reason | None, text: str | None) -> None:
    header = read_header(_message(version, msh15="AL" if enhanced else ""))
    ack = build_ack(header, outcome, control_id="ACK-1", timestamp=TS, reason=reason, text=text)
    m = _strict_parse(ack)
    assert m.msh.msh_12.to_er7() == version
    assert m.msa.msa_1.to_er7() == ack_code(header, outcome)
    assert m.msa.msa_2.to_er7() == "MSG1"
    assert ("ERR" in [s.name for s in m.children]) == (reason is not None or (
        bool(text) and version >= "2.7"))


@pytest.mark.parametrize(("outcome", "original", "enhanced"), [
    (AckOutcome.ACCEPT, "AA", "CA"), (AckOutcome.REJECT, "AR", "CR"), (AckOutcome.ERROR, "AE", "CE")])
def test_ack_codes(outcome: AckOutcome, original: str, enhanced: str) -> None:
    assert ack_code(read_header(_message("2.5")), outcome) == original
    assert ack_code(read_header(_message("2.5", msh15="AL")), outcome) == enhanced
    assert ack_code(read_header(_message("2.5", msh15="NE")), outcome) == enhanced
    assert ack_code(None, outcome) == original


def test_ack_swaps_and_copies() -> None:
    header = read_header(seed_message(control_id=b"CTRL-77"))
    ack = build_ack(header, AckOutcome.ACCEPT, control_id="ACKID-1",
                    timestamp=datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=1))))
    msh, msa = ack.decode().rstrip("\r").split("\r")
    f = msh.split("|")
    assert f[:2] == ["MSH", "^~\\&"]
    assert (f[2], f[3], f[4], f[5]) == ("PKB", "PKB", "PAS", "trustalias{trustalias}")
    assert f[6] == "20240203040506+0100"
    assert f[8] == "ACK^A01^ACK"
    assert f[9] == "ACKID-1"
    assert (f[10], f[11]) == ("P", "2.4")
    assert msa == "MSA|AA|CTRL-77"
    assert ack.endswith(b"\r")
    assert read_header(ack).message_type == "ACK"


def test_ack_never_echoes_patient_data() -> None:
    for name in names():
        ack = build_ack(read_header(load(name)), AckOutcome.REJECT, control_id="A1", timestamp=TS,
                        reason=Reason.DELEGATION_NOT_AUTHORISED, text="delegation not authorised")
        for marker in PATIENT_MARKERS:
            assert marker.encode() not in ack


def test_ack_2_3_omits_structure_component() -> None:
    ack = build_ack(read_header(_message("2.3")), AckOutcome.ACCEPT, control_id="A", timestamp=TS)
    assert ack.split(b"|")[8] == b"ACK^A01"


def test_err_segment_before_2_5() -> None:
    ack = build_ack(read_header(_message("2.4")), AckOutcome.REJECT, control_id="A", timestamp=TS,
                    reason=Reason.MSH4_SYNTAX, text="x")
    segs = ack.decode().rstrip("\r").split("\r")
    assert segs[1] == "MSA|AR|MSG1|MSH4_SYNTAX: x"
    assert segs[2] == "ERR|MSH^1^4^102&Data type error&HL70357&MSH4_SYNTAX&&L"
    ack = build_ack(read_header(_message("2.3")), AckOutcome.ERROR, control_id="A", timestamp=TS,
                    reason=Reason.PROCESSING_ERROR)
    assert ack.decode().rstrip("\r").split("\r")[2] == (
        "ERR|^^^207&Application internal error&HL70357&PROCESSING_ERROR&&L")


def test_err_segment_2_5_and_later() -> None:
    ack = build_ack(read_header(_message("2.5.1", msh15="AL")), AckOutcome.REJECT, control_id="A",
                    timestamp=TS, reason=Reason.UNKNOWN_DATA_CONTROLLER_ALIAS, text="unknown alias")
    segs = ack.decode().rstrip("\r").split("\r")
    assert segs[1] == "MSA|CR|MSG1|UNKNOWN_DATA_CONTROLLER_ALIAS: unknown alias"
    err = segs[2].split("|")
    assert err[2] == "MSH^1^4"
    assert err[3] == "204^Unknown key identifier^HL70357^UNKNOWN_DATA_CONTROLLER_ALIAS^^L"
    assert err[4] == "E"
    assert err[7] == "UNKNOWN_DATA_CONTROLLER_ALIAS"
    assert err[8] == "unknown alias"


def test_msa3_withdrawn_from_2_7() -> None:
    ack = build_ack(read_header(_message("2.8")), AckOutcome.REJECT, control_id="A", timestamp=TS,
                    reason=Reason.CUSTOMER_NOT_ACTIVE, text="customer not active")
    segs = ack.decode().rstrip("\r").split("\r")
    assert segs[1] == "MSA|AR|MSG1"
    assert segs[2].split("|")[7:9] == ["CUSTOMER_NOT_ACTIVE", "customer not active"]


@pytest.mark.parametrize(("outcome", "expected"), [
    (AckOutcome.ERROR, ["AE", "207^Application internal error^HL70357", "E"]),
    (AckOutcome.ACCEPT, ["AA", "0^Message accepted^HL70357", "I"]),
])
def test_text_without_reason_from_2_7_goes_in_an_err_whose_code_matches_the_outcome(
    outcome: AckOutcome, expected: list[str]
) -> None:
    """MSA-3 is withdrawn from 2.7: an AE "not stored, retry" must not carry 0357 code 0."""
    ack = build_ack(read_header(_message("2.7")), outcome, control_id="A", timestamp=TS,
                    text="Message not stored, retry later")
    msa, err = ack.decode().rstrip("\r").split("\r")[1:]
    assert [msa.split("|")[1], *err.split("|")[3:5]] == expected
    assert err.split("|")[8] == "Message not stored, retry later"


@pytest.mark.parametrize(("reason", "code"), [
    (Reason.MALFORMED_HL7, "102"), (Reason.MSH4_MISSING, "101"), (Reason.MSH4_SYNTAX, "102"),
    (Reason.UNKNOWN_CONNECTING_ALIAS, "204"), (Reason.PARTNER_NOT_AUTHORISED, "207"),
    (Reason.PROCESSING_ERROR, "207"), (Reason.MISSING_METADATA, "207")])
def test_error_code_mapping(reason: Reason, code: str) -> None:
    assert error_code(reason) == code


def test_every_reason_builds_a_valid_ack() -> None:
    header = read_header(_message("2.5"))
    for reason in Reason:
        _strict_parse(build_ack(header, AckOutcome.REJECT, control_id="A", timestamp=TS, reason=reason,
                                text=reason.value.lower()))


def test_text_and_ids_are_escaped() -> None:
    header = read_header(_message("2.4", control="C\\F\\1"))
    assert header.message_control_id == "C|1"
    ack = build_ack(header, AckOutcome.REJECT, control_id="ID|^~&\\x", timestamp=TS,
                    reason=Reason.MSH4_SYNTAX, text="a|b^c~d&e\\f\rPID|1")
    segs = ack.decode().rstrip("\r").split("\r")
    assert len(segs) == 3
    assert segs[0].split("|")[9] == "ID\\F\\\\S\\\\R\\\\T\\\\E\\x"
    assert segs[1].split("|")[2] == "C\\F\\1"
    m = parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.TOLERANT)
    assert m.msa.msa_2.to_er7() == "C\\F\\1"


def test_msa3_truncated_before_escaping() -> None:
    ack = build_ack(read_header(_message("2.4")), AckOutcome.REJECT, control_id="A", timestamp=TS,
                    reason=Reason.PROCESSING_ERROR, text="|" * 200)
    msa3 = ack.decode().split("\r")[1].split("|", 3)[3]
    assert msa3.startswith("PROCESSING_ERROR: \\F\\") and msa3.count("\\F\\") == 80 - len("PROCESSING_ERROR: ")


def test_ack_without_header() -> None:
    ack = build_ack(None, AckOutcome.REJECT, control_id="A-1", timestamp=TS,
                    reason=Reason.MALFORMED_HL7, text="no readable MSH")
    h = read_header(ack)
    assert h.version_id == "2.5" and h.encoding_characters == "^~\\&" and h.field_separator == "|"
    assert h.message_control_id == "A-1"
    # MSA-2 (required) stays empty: the received MSH-10 is unknowable, and a
    # placeholder would look like a real correlation id. So hl7apy's strict
    # validation flags exactly that one field, and nothing else.
    m = parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    with pytest.raises(Exception, match="MSA_2"):
        m.validate()
    assert m.msa.msa_1.to_er7() == "AR"
    assert ack.decode().split("\r")[1] == "MSA|AR||MALFORMED_HL7: no readable MSH"


def test_ack_uses_message_delimiters() -> None:
    header = read_header(load("adt_a04_v25_odd_delims"))
    ack = build_ack(header, AckOutcome.REJECT, control_id="A#1", timestamp=TS,
                    reason=Reason.MSH4_SYNTAX, text="x#y")
    assert ack.startswith(b"MSH#$%@!#PKB#PKB#LAB@T@SYS$X#trustalias{trustalias}#")
    back = read_header(ack)
    assert back.message_control_id == "A#1" and back.message_type == "ACK"
    assert back.sending_facility_raw == "PKB" and back.receiving_application_raw == "LAB@T@SYS$X"
    m = parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.TOLERANT)
    assert m.msa.msa_2.to_er7() == "ODD@F@0001"


def test_ack_charset_follows_message() -> None:
    header = read_header(load("adt_a01_v24_latin1"))
    ack = build_ack(header, AckOutcome.ACCEPT, control_id="A", timestamp=TS)
    assert "SYSTÈME".encode("latin-1") in ack
    assert read_header(ack).character_set == "8859/1"


@pytest.mark.parametrize("name", names())
def test_corpus_acks_parse(name: str) -> None:
    header = read_header(load(name))
    for outcome, reason, text in CASES:
        ack = build_ack(header, outcome, control_id="A1", timestamp=TS, reason=reason, text=text)
        back = read_header(ack)
        assert back.message_type == "ACK"
        assert back.version_raw == header.version_raw
        assert back.sending_facility_raw == header.receiving_facility_raw
        assert back.receiving_facility_raw == header.sending_facility_raw
        codec = "latin-1" if header.character_set == "8859/1" else "utf-8"
        m = parse_message(ack.decode(codec), validation_level=VALIDATION_LEVEL.TOLERANT)
        assert m.msa.msa_1.to_er7() == ack_code(header, outcome)


@pytest.mark.parametrize("version", ["\u00b9", "2.\u00b2", "\u0662.5"])  # digits to isdigit(), not to int()
def test_ack_for_a_version_of_non_ascii_digits_builds_as_the_default(version: str) -> None:
    ack = build_ack(read_header(_message(version)), AckOutcome.ACCEPT, control_id="A", timestamp=TS)
    segs = ack.decode().rstrip("\r").split("\r")
    assert segs[1] == "MSA|AA|MSG1"
