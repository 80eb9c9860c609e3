"""salvage_header and the best-effort ACK to a message whose MSH read_header refuses."""

from __future__ import annotations

import dataclasses

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from processor.errors import MalformedHl7, NoMshSegment
from processor.hl7.ack import AckOutcome, build_ack
from processor.hl7.charset import codec_for
from processor.hl7.header import MshHeader, _salvage, read_header, salvage_header
from processor.reasons import Reason
from tests.corpus import load, names

TS = datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone.utc)


def _split_msh(raw: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(prefix, MSH fields, rest) of a corpus message, splitting MSH at its own separator."""
    start = raw.index(b"MSH")
    ends = [i for i in (raw.find(b"\r", start), raw.find(b"\n", start)) if i >= 0]
    end = min(ends) if ends else len(raw)
    segment = raw[start:end]
    return raw[:start], segment.split(segment[3:4]), raw[end:]


def _mutate(raw: bytes, index: int, value: bytes | None) -> bytes:
    """Set MSH field ``index`` (list position; MSH-n is n-1 for n >= 2) or cut before it."""
    prefix, fields, rest = _split_msh(raw)
    fs = fields[0][3:4] if len(fields[0]) > 3 else raw[raw.index(b"MSH") + 3: raw.index(b"MSH") + 4]
    if value is None:
        fields = fields[:index]
    else:
        fields += [b""] * (index + 1 - len(fields))
        fields[index] = value
    return prefix + fs.join(fields) + rest


def _wire(h: MshHeader, value: str) -> bytes:
    """``value`` as its bytes in the message (salvage keeps undecodable bytes as surrogates)."""
    return value.encode(codec_for(h.character_set) or "utf-8", "surrogateescape")


# (name, list index of the MSH field, value or None to truncate, expected err_code)
MUTATIONS = [
    ("empty MSH-9", 8, b"", "101"),
    ("empty MSH-10", 9, b"", "101"),
    ("empty MSH-12", 11, b"", "101"),
    ("eleven fields", 11, None, "101"),
    ("unsupported MSH-18", 17, b"EBCDIC", "103"),
]


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize(("label", "index", "value", "code"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_salvage_corpus_malformed_variants(name: str, label: str, index: int, value: bytes | None,
                                           code: str) -> None:
    raw = load(name)
    good = read_header(raw)
    bad = _mutate(raw, index, value)
    with pytest.raises(MalformedHl7) as info:
        read_header(bad)
    if value is None and not b"".join(_split_msh(bad)[1]).isascii():
        code = "102"  # MSH-18 cut off leaves non-ASCII bytes in no declared charset: found first
    assert info.value.err_code == code
    h = salvage_header(bad)
    assert isinstance(h, MshHeader)
    assert (h.field_separator, h.encoding_characters) == (good.field_separator, good.encoding_characters)
    for attr in ("sending_facility_raw", "receiving_facility_raw", "sending_application_raw"):
        assert _wire(h, getattr(h, attr)) == _wire(good, getattr(good, attr))
    assert h.accept_ack_type == (good.accept_ack_type if value is not None else None)  # cut: no MSH-15
    assert h.segment_terminator == good.segment_terminator
    if index != 9:
        assert h.message_control_id == good.message_control_id
    if index == 17:
        assert h.character_set is None
    ack = build_ack(h, AckOutcome.REJECT, control_id="A1", timestamp=TS, reason=Reason.MALFORMED_HL7,
                    error_code=info.value.err_code)
    back = read_header(ack)  # the ACK itself is well-formed, in the sender's delimiters
    assert back.field_separator == good.field_separator
    assert back.encoding_characters == good.encoding_characters
    assert back.sending_facility_raw == good.receiving_facility_raw
    assert back.receiving_facility_raw == good.sending_facility_raw
    assert back.version_id == (good.version_id if index not in (11,) else "2.5")


@pytest.mark.parametrize("name", names())
def test_salvage_equals_read_header_when_readable(name: str) -> None:
    raw = load(name)
    assert salvage_header(raw) == read_header(raw)


@pytest.mark.parametrize("data", [
    b"", b"PID|1\r", b"PID|1\rMSH|^~\\&|A|B|C|D|2024||ADT^A01|C1|P|2.5\r", b"MSH", b"MSH|^~",
    b"MSH|ab\\&|A|B|C|D|2024||ADT^A01|C1|P|2.5\r", b"MSH|^^\\&|A\r", b"MSH\x00\x00\x00\x00\x00",
    b"MSH|^~\xc3\xa9&|A\r", "MSH|^~\\&|A".encode("utf-16"),
])
def test_salvage_none_without_usable_delimiters(data: bytes) -> None:
    assert salvage_header(data) is None


def test_undecodable_msh4_round_trips_for_the_key() -> None:
    raw = b"MSH|^~\\&|A|SYST\xc8ME|C|D|2024||ADT^A01|C1|P|2.5\rPID|1\r"
    with pytest.raises(MalformedHl7) as info:
        read_header(raw)
    assert info.value.err_code == "102"
    h = salvage_header(raw)
    assert h is not None and h.message_control_id == "C1"
    assert h.sending_facility_raw.encode("utf-8", "surrogateescape") == b"SYST\xc8ME"
    ack = build_ack(h, AckOutcome.REJECT, control_id="A1", timestamp=TS, reason=Reason.MALFORMED_HL7)
    assert ack.split(b"\r")[0].split(b"|")[5] == b"SYST?ME"  # replaced, never raw invalid bytes


def test_supported_charset_is_kept_even_when_other_fields_are_missing() -> None:
    raw = "MSH|^~\\&|A|SYSTÈME|C|D|2024||ADT^A01||P|2.4||||||8859/1\r".encode("latin-1")
    h = salvage_header(raw)
    assert h is not None and h.character_set == "8859/1" and h.sending_facility_raw == "SYSTÈME"
    ack = build_ack(h, AckOutcome.REJECT, control_id="A1", timestamp=TS, reason=Reason.MALFORMED_HL7)
    assert ack.split(b"\r")[0].split(b"|")[5] == "SYSTÈME".encode("latin-1")


_MSH_ISH = st.builds(
    lambda head, body: head + body,
    st.sampled_from([b"MSH|^~\\&|", b"MSH#$~\\&#", b"\x0bMSH|^~\\&#|", b"MSH|", b"MSH", b"", b"\xef\xbb\xbfMSH|^~\\&"]),
    st.binary(max_size=300),
)
_FIELDS = st.lists(
    st.one_of(st.sampled_from(["", "A", "2.5", "ADT^A01", "\\F\\", "\\", "8859/1", "UNICODE UTF-8", "AL"]),
              st.text(max_size=8)),
    max_size=20,
).map(lambda fs: ("MSH|^~\\&|" + "|".join(fs)).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _MSH_ISH, _FIELDS))
def test_lenient_reader_never_raises(data: bytes) -> None:
    """salvage_header's own ``except Exception: return None`` would turn an internal bug
    (an IndexError on a short MSH, say) into a quiet "nothing salvageable": the property is
    checked on the lenient reader behind it, which must return a header or None by itself."""
    h = _salvage(data)
    assert h is None or isinstance(h, MshHeader)
    if h is not None:  # whatever is returned is as whole as read_header's
        assert all(getattr(h, f.name) is not None or f.type != "str" for f in dataclasses.fields(h))
        assert h.field_separator == chr(data[data.index(b"MSH") + 3])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _MSH_ISH, _FIELDS))
def test_salvage_never_raises(data: bytes) -> None:
    h = salvage_header(data)
    assert h is None or isinstance(h, MshHeader)
    try:
        expected: MshHeader | None = read_header(data)
    except NoMshSegment:
        assert h is None
        return
    except MalformedHl7:  # read_header refused: the answer is the lenient reader's own
        assert h == _salvage(data)
        return
    assert h == expected


@settings(max_examples=200, deadline=None)
@given(_FIELDS)
def test_salvaged_ack_always_builds_and_reads_back(data: bytes) -> None:
    h = salvage_header(data)
    assert h is not None  # "|^~\&" is always usable
    ack = build_ack(h, AckOutcome.REJECT, control_id="A1", timestamp=TS, reason=Reason.MALFORMED_HL7,
                    error_code="101")
    back = read_header(ack)
    assert back.message_type == "ACK" and back.version_id
    assert ack.split(b"\r")[1].split(b"|")[:2] == [b"MSA", b"CR" if h.enhanced_mode else b"AR"]


def test_salvaged_ack_of_an_end_block_version_reads_back() -> None:
    data = b"MSH|^~\\&||||||||||\x1c|"
    h = salvage_header(data)
    assert h is not None and h.version_raw == "\x1c"
    ack = build_ack(h, AckOutcome.REJECT, control_id="A1", timestamp=TS, reason=Reason.MALFORMED_HL7,
                    error_code="101")
    assert b"\x1c" not in ack  # never the MLLP end-block byte inside an ACK
    assert read_header(ack).version_id


# --- the audit cases -------------------------------------------------------------------------

def _reject(raw: bytes) -> tuple[bytes, str]:
    with pytest.raises(MalformedHl7) as info:
        read_header(raw)
    code = info.value.err_code
    return build_ack(salvage_header(raw), AckOutcome.REJECT, control_id="ACK1", timestamp=TS,
                     reason=Reason.MALFORMED_HL7, error_code=code), code


def test_audit_empty_version_answers_msa2_swap_and_default_version() -> None:
    raw = b"MSH|^~\\&|PAS|ta{tb}|PKB|PKBFAC|20240115||ADT^A01^ADT_A01|NOVER|T|\rPID|1\r"
    ack, code = _reject(raw)
    assert code == "101"
    msh, msa, err = ack.decode().rstrip("\r").split("\r")
    f = msh.split("|")
    assert f[2:6] == ["PKB", "PKBFAC", "PAS", "ta{tb}"]
    assert f[8:12] == ["ACK^A01^ACK", "ACK1", "T", "2.5"]
    assert msa == "MSA|AR|NOVER|MALFORMED_HL7"
    assert err.split("|")[3].startswith("101^Required field missing^HL70357^MALFORMED_HL7")
    m = parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    m.validate()  # version 2.5 (the default) is known: the ACK is fully valid


def test_audit_custom_delimiters_with_empty_msh9() -> None:
    raw = b"MSH#$~\\&#PAS#ta{tb}#PKB#PKBFAC#20240115###CUST1#P#2.5###AL\rPID#1\r"
    ack, code = _reject(raw)
    assert code == "101"
    msh, msa, err = ack.decode().rstrip("\r").split("\r")
    assert msh.startswith("MSH#$~\\&#PKB#PKBFAC#PAS#ta{tb}#")
    assert msh.split("#")[8:12] == ["ACK$$ACK", "ACK1", "P", "2.5"]
    assert msa == "MSA#CR#CUST1#MALFORMED_HL7"  # MSH-15 set: enhanced mode
    assert err.startswith("ERR##MSH$1#101$Required field missing$HL70357$MALFORMED_HL7")
    m = parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    m.validate()
    assert m.msa.msa_2.to_er7() == "CUST1"


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.6", "2.8"])
def test_salvaged_ack_validates_in_the_received_version(version: str) -> None:
    # Unsupported MSH-18: everything else readable (an empty MSH-9 would leave the ACK's
    # trigger empty, which 2.6+ validators flag: MSG.2 is required there).
    raw = f"MSH|^~\\&|PAS|FAC|PKB|PKBFAC|20240115||ADT^A01|C9|P|{version}||||||EBCDIC\rPID|1\r".encode()
    ack, code = _reject(raw)
    assert code == "103" and read_header(ack).version_id == version
    assert read_header(ack).character_set is None and b"103" in ack.split(b"\r")[2]
    if version == "2.3":
        return  # hl7apy cannot derive the 2.3 ACK structure from MSH-9 (see test_ack._strict_parse)
    m = parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    m.validate()
    assert m.msa.msa_2.to_er7() == "C9"


@pytest.mark.parametrize(("raw", "code"), [
    (b"PID|1\rMSH|^~\\&|A|B|C|D|2024||ADT^A01|C1|P|2.5\r", "100"),
    (b"MSH|^~\\&|A\r", "101"),
    (b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|C1|P|2.5||||||EBCDIC\r", "103"),
    (b"MSH|^^\\&|A|B|C|D|2024||ADT^A01|C1|P|2.5\r", "102"),
    (b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|\xff|P|2.5\r", "102"),
])
def test_err_code_names_the_failure(raw: bytes, code: str) -> None:
    with pytest.raises(MalformedHl7) as info:
        read_header(raw)
    assert info.value.err_code == code
    ack = build_ack(salvage_header(raw), AckOutcome.REJECT, control_id="A", timestamp=TS,
                    reason=Reason.MALFORMED_HL7, error_code=code)
    assert f"|{code}^".encode() in ack


def test_error_code_only_refines_malformed() -> None:
    h = read_header(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|C1|P|2.5\r")
    ack = build_ack(h, AckOutcome.REJECT, control_id="A", timestamp=TS, reason=Reason.MSH4_MISSING,
                    error_code="103")
    assert b"|101^Required field missing^" in ack
