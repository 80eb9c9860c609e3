"""ACK content the hl7apy validation in test_ack.py lets through: exact segments a partner reads.

Written to kill mutants that survived ``make mutation`` (docs/mutation.md): empty fields that
must stay empty, the message's own (unusual) delimiters for every text we insert, and the
ACK to a message whose MSH could not be read.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processor.hl7.ack import AckOutcome, build_ack
from processor.hl7.header import read_header, salvage_header
from processor.reasons import Reason

TS = datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)


def _segments(ack: bytes) -> list[str]:
    assert ack.endswith(b"\r")
    return ack.decode().split("\r")[:-1]


def _message(version: str, *, enc: str = "^~\\&", msh9: str = "ADT^A01^ADT_A01", msh18: str = "") -> bytes:
    tail = f"||||||{msh18}" if msh18 else ""
    return f"MSH|{enc}|PAS|ta{{tb}}|PKB|PKBFAC|20240115||{msh9}|MSG1|T|{version}{tail}\rPID|1\r".encode()


def test_err_without_text_ends_at_the_reason_code() -> None:
    """2.5+: ERR-5/6 empty, ERR-7 the reason, and no ERR-8 when there is no text."""
    header = read_header(_message("2.5"))
    ack = build_ack(
        header, AckOutcome.REJECT, control_id="ACK1", timestamp=TS, reason=Reason.PARTNER_NOT_AUTHORISED
    )
    assert _segments(ack)[1:] == [
        "MSA|AR|MSG1|PARTNER_NOT_AUTHORISED",
        "ERR||MSH^1^4|207^Application internal error^HL70357^PARTNER_NOT_AUTHORISED^^L"
        "|E|||PARTNER_NOT_AUTHORISED",
    ]


def test_msh_of_an_ack_has_empty_security_and_optional_fields_before_msh18() -> None:
    header = read_header(_message("2.5", msh18="8859/1"))
    msh = _segments(build_ack(header, AckOutcome.ACCEPT, control_id="ACK1", timestamp=TS))[0]
    assert msh == "MSH|^~\\&|PKB|PKBFAC|PAS|ta{tb}|20240203040506+0000||ACK^A01^ACK|ACK1|T|2.5||||||8859/1"


@pytest.mark.parametrize(
    ("outcome", "text", "err"),
    [
        (AckOutcome.ACCEPT, "stored", "ERR|||0^Message accepted^HL70357|I||||stored"),
        (
            AckOutcome.ERROR,
            "Message not stored, retry later",
            "ERR|||207^Application internal error^HL70357|E||||Message not stored, retry later",
        ),
    ],
    ids=["accept-remark", "storage-error"],
)
def test_v27_text_without_reason_goes_in_err8_only(outcome: AckOutcome, text: str, err: str) -> None:
    header = read_header(_message("2.7"))
    segments = _segments(build_ack(header, outcome, control_id="ACK1", timestamp=TS, text=text))
    assert segments[1:] == [f"MSA|{'AA' if outcome is AckOutcome.ACCEPT else 'AE'}|MSG1", err]


def test_ack_to_an_unreadable_message() -> None:
    """No header: production processing id, empty trigger, default version, empty MSA-2."""
    ack = build_ack(None, AckOutcome.REJECT, control_id="ACK1", timestamp=TS, reason=Reason.MALFORMED_HL7)
    assert _segments(ack) == [
        "MSH|^~\\&|||||20240203040506+0000||ACK^^ACK|ACK1|P|2.5",
        "MSA|AR||MALFORMED_HL7",
        "ERR||MSH^1|102^Data type error^HL70357^MALFORMED_HL7^^L|E|||MALFORMED_HL7",
    ]


# The message's component separator is "/": every text the ACK inserts is escaped with it
# (a "/" becomes \S\, a "^" is plain text), so the partner's parser reads it back intact.
SLASH = "/~\\&"


def test_unusual_delimiters_escape_trigger_msa3_err8_and_msh18() -> None:
    header = read_header(_message("2.5", enc=SLASH, msh9="ADT/A^1", msh18="8859\\S\\1"))
    assert header.character_set == "8859/1" and header.trigger_event == "A^1"
    ack = build_ack(
        header, AckOutcome.REJECT, control_id="ACK1", timestamp=TS, reason=Reason.MSH4_SYNTAX, text="a/b^c"
    )
    assert _segments(ack) == [
        "MSH|/~\\&|PKB|PKBFAC|PAS|ta{tb}|20240203040506+0000||ACK/A^1/ACK|ACK1|T|2.5||||||8859\\S\\1",
        "MSA|AR|MSG1|MSH4_SYNTAX: a\\S\\b^c",
        "ERR||MSH/1/4|102/Data type error/HL70357/MSH4_SYNTAX//L|E|||MSH4_SYNTAX|a\\S\\b^c",
    ]


def test_unusual_delimiters_escape_the_v27_informational_err() -> None:
    header = read_header(_message("2.7", enc=SLASH, msh9="ADT/A01"))
    ack = build_ack(header, AckOutcome.ERROR, control_id="ACK1", timestamp=TS, text="a/b^c")
    assert _segments(ack)[1:] == [
        "MSA|AE|MSG1",
        "ERR|||207/Application internal error/HL70357|E||||a\\S\\b^c",
    ]


@pytest.mark.parametrize("msh12", ["", "^2.4"], ids=["empty", "empty-version-id"])
def test_ack_to_a_salvaged_header_without_version_id_uses_the_default_version(msh12: str) -> None:
    payload = f"MSH|^~\\&|PAS|ta{{tb}}|PKB|PKBFAC|20240115||ADT^A01|MSG1|T|{msh12}\rPID|1\r".encode()
    header = salvage_header(payload)
    assert header is not None and header.version_id == ""
    ack = build_ack(header, AckOutcome.REJECT, control_id="ACK1", timestamp=TS, reason=Reason.MALFORMED_HL7)
    assert _segments(ack)[0].split("|")[11] == "2.5"
