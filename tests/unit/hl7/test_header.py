"""read_header: differential against hl7apy, properties, and a seed corpus of parser-breakers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from processor.errors import MalformedHl7, NoMshSegment
from processor.hl7.header import MshHeader, read_header
from tests.corpus import PATIENT_MARKERS, load, names, seed_message
from tests.unit.hl7.hl7ref import hl7apy_message, ref_escape, ref_unescape

PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


# --------------------------------------------------------------- corpus vs hl7apy


@pytest.mark.parametrize("name", names())
def test_corpus_header_matches_hl7apy(name: str) -> None:
    raw = load(name)
    h = read_header(raw)
    msh = hl7apy_message(raw, h.character_set).msh
    d = (h.field_separator, h.component_separator, h.repetition_separator, h.escape_character,
         h.subcomponent_separator)

    assert msh.msh_1.value == h.field_separator
    assert msh.msh_2.value[:4] == h.encoding_characters
    assert msh.msh_3.to_er7() == h.sending_application_raw
    assert msh.msh_4.to_er7() == h.sending_facility_raw
    assert msh.msh_5.to_er7() == h.receiving_application_raw
    assert msh.msh_6.to_er7() == h.receiving_facility_raw
    assert msh.msh_7.to_er7() == h.message_datetime
    assert msh.msh_10.to_er7() == ref_escape(h.message_control_id, *_ref_order(d))
    assert msh.msh_11.to_er7() == h.processing_id_raw
    assert msh.msh_12.to_er7() == h.version_raw
    assert ref_unescape(msh.msh_4.msh_4_1.to_er7(), *_ref_order(d)) == h.msh4_namespace_id
    assert ref_unescape(msh.msh_9.msh_9_1.to_er7(), *_ref_order(d)) == h.message_type
    assert ref_unescape(msh.msh_9.msh_9_2.to_er7(), *_ref_order(d)) == h.trigger_event
    assert (msh.msh_15.to_er7() or None) == h.accept_ack_type
    assert (msh.msh_18.to_er7() or None) == h.character_set


def _ref_order(d: tuple[str, str, str, str, str]) -> tuple[str, str, str, str, str]:
    fs, cs, rs, esc, ss = d
    return fs, cs, rs, esc, ss


def test_corpus_specifics() -> None:
    assert read_header(load("adt_a01_v231_lf")).segment_terminator == "\n"
    assert read_header(load("oru_r01_v24_crlf")).segment_terminator == "\r\n"
    assert read_header(load("adt_a01_v24_seed")).segment_terminator == "\r"
    latin = read_header(load("adt_a01_v24_latin1"))
    assert latin.sending_application == "SYSTÈME" and latin.character_set == "8859/1"
    odd = read_header(load("adt_a04_v25_odd_delims"))
    assert (odd.field_separator, odd.encoding_characters) == ("#", "$%@!")
    assert odd.sending_application == "LAB!SYS" and odd.message_control_id == "ODD#0001"
    trunc = read_header(load("siu_s12_v27_truncation_char"))
    assert trunc.encoding_characters == "^~\\&"
    assert read_header(load("adt_a03_v25_escaped_msh4")).msh4_namespace_id == "trust&alias{trustalias}"
    enh = read_header(load("oru_r01_v251_enhanced"))
    assert enh.enhanced_mode and enh.application_ack_type == "NE"
    assert enh.msh4_namespace_id == "labalias{trustalias}"
    assert not read_header(seed_message()).enhanced_mode


def test_header_rebuilt_through_init_is_equal() -> None:
    h = read_header(load("oru_r01_v251_enhanced"))
    assert MshHeader(**dataclasses.asdict(h)) == h
    assert hash(MshHeader(**dataclasses.asdict(h))) == hash(h)
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.values = h.values  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):  # TypeError on CPython 3.11-3.13, see MshHeader
        h.message_type = "X"  # type: ignore[misc]
    assert h.message_type == "ORU"


# --------------------------------------------------------------- generated messages

_text_alphabet = st.sampled_from(list("abcXYZ019 .-_{}/é€") + list(PUNCT))
_values = st.text(_text_alphabet, min_size=0, max_size=12)
_nonempty = st.text(_text_alphabet, min_size=1, max_size=12)


@st.composite
def generated(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    delims = draw(st.permutations(list(PUNCT)).map(lambda p: p[:5]))
    fs, cs, rs, esc, ss = delims
    e = lambda v: ref_escape(v, fs, cs, rs, esc, ss)  # noqa: E731
    want = {
        "app": draw(_values),
        "ns": draw(_values),
        "type": draw(_nonempty),
        "trigger": draw(_values),
        "structure": draw(_values),
        "control": draw(_nonempty),
        "version": draw(st.sampled_from(["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])),
        "accept": draw(st.sampled_from(["", "AL", "NE", "ER", "SU"])),
        "charset": draw(st.sampled_from(["", "UNICODE UTF-8", "8859/1", "ASCII"])),
    }
    if want["charset"] in ("ASCII",):
        assume(all(str(v).isascii() for v in want.values()))
    if want["charset"] == "8859/1":
        assume(all(ord(c) < 256 for v in want.values() for c in str(v)))
    term = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    prefix = draw(st.sampled_from(["", "\ufeff", "\x0b"]))
    msh9 = cs.join([e(want["type"]), e(want["trigger"]), e(want["structure"])])
    fields = [
        "MSH", cs + rs + esc + ss, e(want["app"]) + cs + "HOST", e(want["ns"]) + cs + e("1.2.3") + cs + "ISO",
        "RECV", "FAC", "20240101120000", "", msh9, e(want["control"]), "P", e(want["version"]),
        "", "", e(want["accept"]), "", "", e(want["charset"]),
    ]
    pid = fs.join(["PID", "1", "", "ZZT0000001", "", "ZZTESTPATIENT" + cs + "ZZTESTFIRST"])
    text = prefix + fs.join(fields) + term + pid + term
    codec = {"": "utf-8", "UNICODE UTF-8": "utf-8", "8859/1": "latin-1", "ASCII": "ascii"}[want["charset"]]
    data = (b"\xef\xbb\xbf" + text[1:].encode(codec)) if prefix == "\ufeff" else text.encode(codec)
    want.update(delims=tuple(delims), term=term)
    return data, want


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(generated())
def test_generated_messages_round_trip(case: tuple[bytes, dict[str, object]]) -> None:
    data, want = case
    h = read_header(data)
    assert (h.field_separator, h.component_separator, h.repetition_separator, h.escape_character,
            h.subcomponent_separator) == want["delims"]
    assert h.sending_application == (want["app"] or None)
    assert h.msh4_namespace_id == want["ns"]
    assert h.message_type == want["type"]
    assert h.trigger_event == (want["trigger"] or None)
    assert h.message_structure == (want["structure"] or None)
    assert h.message_control_id == want["control"]
    assert h.version_id == want["version"]
    assert h.accept_ack_type == (want["accept"] or None)
    assert h.enhanced_mode == bool(want["accept"])
    assert h.character_set == (want["charset"] or None)
    assert h.segment_terminator == want["term"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(generated())
def test_generated_messages_match_hl7apy(case: tuple[bytes, dict[str, object]]) -> None:
    data, want = case
    # hl7apy strips surrounding whitespace from values; we keep it (SPEC: it is an error, not trimmed).
    assume(all(v == v.strip() for k, v in want.items() if isinstance(v, str) and k != "term"))
    h = read_header(data)
    try:
        msh = hl7apy_message(data, h.character_set).msh
    except Exception:  # noqa: BLE001 - hl7apy refuses some legal delimiter choices; not our oracle then
        assume(False)
        raise
    assert msh.msh_1.value == h.field_separator
    assert msh.msh_3.to_er7() == h.sending_application_raw
    assert msh.msh_4.to_er7() == h.sending_facility_raw
    assert msh.msh_9.to_er7().split(h.component_separator)[0] == ref_escape(
        h.message_type, h.field_separator, h.component_separator, h.repetition_separator,
        h.escape_character, h.subcomponent_separator)
    assert msh.msh_12.to_er7() == h.version_raw


# --------------------------------------------------------------- arbitrary input
#
# read_header ends in a defence-in-depth ``except Exception`` that turns ANY internal error
# (an IndexError from an off-by-one, a TypeError...) into MalformedHl7 with err_code 207
# ("application internal error", HL7 table 0357). Accepting any MalformedHl7 would let such
# a bug pass as "bad input"; so every refusal here must be one of the documented input
# problems (processor/errors.py: 100 MSH not first / no MSH, 101 required field missing,
# 102 bad delimiters or undecodable bytes, 103 MSH-18 not supported), never the catch-all.

INPUT_ERR_CODES = frozenset({"100", "101", "102", "103"})
CATCH_ALL = ("207", "MSH segment could not be read")


def assert_input_error(exc: MalformedHl7) -> None:
    assert type(exc) in (MalformedHl7, NoMshSegment), type(exc)
    assert (exc.err_code, str(exc)) != CATCH_ALL, "an internal error reached the catch-all"
    assert exc.err_code in INPUT_ERR_CODES, (exc.err_code, str(exc))
    assert str(exc) != CATCH_ALL[1]


def read_or_input_error(data: bytes) -> MshHeader | None:
    """read_header's header, or None after checking the refusal is a documented input error."""
    try:
        h = read_header(data)
    except MalformedHl7 as exc:
        assert_input_error(exc)
        return None
    assert h.message_type and h.message_control_id and h.version_id
    return h


def test_the_oracle_sees_the_catch_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal error (here: a helper raising) comes out as MalformedHl7 207, and the
    check above refuses it; so the properties below fail on such a bug."""
    import processor.hl7.header as header_module

    def boom(_name: str) -> None:
        raise RuntimeError("internal bug")

    monkeypatch.setattr(header_module, "codec_for", boom)
    with pytest.raises(MalformedHl7) as info:
        read_header(_with_msh18(b"8859/1"))
    assert info.value.err_code == "207"
    with pytest.raises(AssertionError):
        assert_input_error(info.value)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_malformed_family(data: bytes) -> None:
    read_or_input_error(data)


_MSH_PREFIX = st.sampled_from([b"MSH|^~\\&|", b"MSH", b"\x0bMSH|", b"PID|1\rMSH|^~\\&|", b"\xef\xbb\xbfMSH#"])


@settings(max_examples=500)
@given(_MSH_PREFIX, st.binary(max_size=300))
def test_msh_prefixed_bytes_only_malformed_family(prefix: bytes, tail: bytes) -> None:
    read_or_input_error(prefix + tail)


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"A", b"\x1c", b"\xc3"]),
                max_size=200))
def test_delimiter_soup_after_header(parts: list[bytes]) -> None:
    read_or_input_error(b"MSH|^~\\&|" + b"".join(parts))


_FIELD = st.sampled_from(["", "A", "2.5", "ADT^A01", "X1", "\\F\\", "AL", "8859/1", "UNICODE UTF-8", "a^b~c&d"])


@settings(max_examples=400)
@given(st.lists(_FIELD, max_size=24), st.sampled_from(["", "\r", "\rPID|1\r", "\n"]))
def test_every_field_count(fields: list[str], tail: str) -> None:
    """MSH with 0..24 fields after MSH-2: every count is a header or a documented refusal
    (an off-by-one in reading the optional MSH-13..18 would otherwise hide in the catch-all)."""
    read_or_input_error(("MSH|^~\\&|" + "|".join(fields) + tail).encode())


# --------------------------------------------------------------- seed corpus of parser-breakers

GOOD = seed_message()
MSH_LINE = GOOD.split(b"\r", 1)[0]
REST = GOOD[len(MSH_LINE):]


def _msh(*fields: bytes) -> bytes:
    return b"|".join(fields)


def _with_msh18(charset: bytes, sending_app: bytes = b"PAS") -> bytes:
    return _msh(b"MSH", b"^~\\&", sending_app, b"trustalias{trustalias}", b"PKB", b"PKB", b"20240101",
                b"", b"ADT^A01", b"C1", b"P", b"2.5", b"", b"", b"", b"", b"", charset) + b"\rPID|1\r"


NO_MSH = {
    "empty": b"",
    "bare PV1": b"PV1|1|I|WARD1^BED1\r",
    "whitespace only": b" \r\n\t",
    "mllp frame only": b"\x0b\x1c\r",
    "bom only": b"\xef\xbb\xbf",
    "lower-case msh": GOOD.lower(),
    "pid segments": b"PID|1||ZZT0000001\rPV1|1\r",
}

MALFORMED = {
    "MSH alone": b"MSH",
    "MSH and separator": b"MSH|",
    "truncated MSH": b"MSH|^~\\&|PAS|trustalias{trustalias}|PKB\rPID|1\r",
    "eleven fields": b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X|P\r",
    "alphanumeric field separator": b"MSHA^~\\&A" + b"A" * 40,
    "space field separator": b"MSH ^~\\& PAS x y z 1 2 ADT^A01 X P 2.5\r",
    "control char field separator": b"MSH\x01^~\\&\x01a\x01b\x01c\x01d\x01e\x01\x01ADT\x01X\x01P\x012.5\r",
    "encoding chars too short": MSH_LINE.replace(b"^~\\&", b"^~", 1) + REST,
    "encoding chars repeated": MSH_LINE.replace(b"^~\\&", b"^^\\&", 1) + REST,
    "encoding chars alphanumeric": MSH_LINE.replace(b"^~\\&", b"ab\\&", 1) + REST,
    "encoding chars contain field sep": MSH_LINE.replace(b"^~\\&", b"^|\\&", 1) + REST,
    "encoding chars too long": MSH_LINE.replace(b"^~\\&", b"^~\\&#!", 1) + REST,
    "empty message type": MSH_LINE.replace(b"ADT^A01^ADT_A01", b"", 1) + REST,
    "empty control id": MSH_LINE.replace(b"MSG00001", b"", 1) + REST,
    "empty version": MSH_LINE[: MSH_LINE.rindex(b"|") + 1] + REST,
    "MSH not first": b"PID|1||ZZT0000001\r" + GOOD,
    "ASCII declared, latin-1 byte": _with_msh18(b"ASCII", "SYSTÈME".encode("latin-1")),
    "undeclared, not UTF-8": _with_msh18(b"", b"SYST\xc8ME"),
    "UTF-8 declared, invalid sequence": _with_msh18(b"UNICODE UTF-8", b"SYST\xc3\x28ME"),
    "8859/3 undefined byte": _with_msh18(b"8859/3", b"SYST\xa5ME"),
    "unsupported charset": _with_msh18(b"UNICODE UTF-16"),
    "unknown charset name": _with_msh18(b"EBCDIC"),
    "non-ASCII charset name": _with_msh18("8859/1é".encode("latin-1"), b"SYST\xc8ME"),
    "NUL junk": b"MSH\x00\x00\x00\x00",
}


@pytest.mark.parametrize("data", NO_MSH.values(), ids=NO_MSH.keys())
def test_no_msh_segment(data: bytes) -> None:
    with pytest.raises(NoMshSegment):
        read_header(data)


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_but_not_missing(data: bytes) -> None:
    with pytest.raises(MalformedHl7) as info:
        read_header(data)
    assert not isinstance(info.value, NoMshSegment)
    assert_input_error(info.value)


@pytest.mark.parametrize("data", list(NO_MSH.values()) + list(MALFORMED.values()))
def test_error_texts_carry_no_content(data: bytes) -> None:
    with pytest.raises(MalformedHl7) as info:
        read_header(data)
    text = str(info.value)
    assert text
    for marker in (*PATIENT_MARKERS, "trustalias", "SYST", "PAS"):
        assert marker not in text


ACCEPTED = {
    "bom": b"\xef\xbb\xbf" + GOOD,
    "mllp then bom": b"\x0b\xef\xbb\xbf" + GOOD + b"\x1c\r",
    "mllp framed": b"\x0b" + GOOD + b"\x1c\r",
    "mllp leftover before": b"\x1c\r\x0b" + GOOD,
    "single segment mllp": b"\x0b" + MSH_LINE + b"\x1c\r",
    "single segment no terminator": MSH_LINE,
    "blank lines before": b"\r\n\n" + GOOD,
    "lone LF endings": GOOD.replace(b"\r", b"\n"),
    "CRLF endings": GOOD.replace(b"\r", b"\r\n"),
    "latin-1 declared": _with_msh18(b"8859/1", b"SYST\xc8ME"),
    "UTF-8 undeclared": _with_msh18(b"", "SYSTÈME".encode()),
    "charset case-insensitive": _with_msh18(b"unicode utf-8", "SYSTÈME".encode()),
    "invalid bytes after MSH": GOOD + b"OBX|1|ST|X||\xff\xfe\xc3\x28\r",
    "truncation char": MSH_LINE.replace(b"^~\\&", b"^~\\&#", 1) + REST,
    "bytearray input": bytearray(GOOD),
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_variants(data: bytes) -> None:
    h = read_header(data)  # type: ignore[arg-type]
    assert h.message_type == "ADT" and h.trigger_event == "A01"
    assert h.msh4_namespace_id == "trustalias{trustalias}"


def test_single_segment_mllp_strips_end_block() -> None:
    h = read_header(b"\x0b" + MSH_LINE + b"\x1c\r")
    assert h.version_raw == "2.4"


def test_lf_terminator_found_beyond_window() -> None:
    big_msh = MSH_LINE.replace(b"PAS", b"P" * 200_000, 1)
    h = read_header(big_msh + b"\nPID|1\n")
    assert h.segment_terminator == "\n" and len(h.sending_application_raw) == 200_000


@pytest.mark.timeout(60)
def test_two_megabyte_field_in_payload() -> None:
    data = GOOD + b"OBX|1|ED|PDF||^application^pdf^Base64^" + b"QUFB" * 512 * 1024 + b"\r"
    assert read_header(data).message_control_id == "MSG00001"


@pytest.mark.timeout(60)
def test_two_megabyte_field_in_msh() -> None:
    data = MSH_LINE.replace(b"|PAS|", b"|" + b"A" * 2_000_000 + b"|", 1) + REST
    assert len(read_header(data).sending_application or "") == 2_000_000


@pytest.mark.timeout(60)
@pytest.mark.parametrize("blob", [b"\\" * 2_000_000, b"\\X" * 1_000_000, b"A\\" * 1_000_000])
def test_escape_heavy_msh_field(blob: bytes) -> None:
    data = MSH_LINE.replace(b"trustalias{trustalias}", blob, 1) + REST
    h = read_header(data)
    assert len(h.msh4_namespace_id) <= len(blob)


@pytest.mark.parametrize("tail", [b"\\", b"abc\\", b"\\F", b"\\F\\\\"])
def test_trailing_escape_character(tail: bytes) -> None:
    data = MSH_LINE.replace(b"trustalias{trustalias}", b"trust" + tail, 1) + REST
    h = read_header(data)
    assert h.msh4_namespace_id.startswith("trust")


@pytest.mark.timeout(60)
def test_lf_only_large_message_no_cr() -> None:
    data = GOOD.replace(b"\r", b"\n") + b"OBX|1|TX|X||" + b"B" * 5_000_000 + b"\n"
    assert read_header(data).segment_terminator == "\n"


@pytest.mark.timeout(60)
def test_megabytes_of_framing_before_msh() -> None:
    assert read_header(b"\r\n \x0b" * 1_000_000 + GOOD).message_control_id == "MSG00001"
    with pytest.raises(NoMshSegment):
        read_header(b"\r\n" * 2_000_000)


def test_no_msh_anywhere_in_large_input() -> None:
    with pytest.raises(NoMshSegment):
        read_header(b"PV1|" + b"x" * 3_000_000)


def test_rejects_non_bytes() -> None:
    with pytest.raises(MalformedHl7):
        read_header("MSH|^~\\&|")  # type: ignore[arg-type]


def test_http_charset_names_map_to_msh18_names() -> None:
    from processor.hl7.charset import charset_from_http

    assert charset_from_http("ISO-8859-1") == charset_from_http("latin1") == "8859/1"
    assert charset_from_http(" utf-8 ") == charset_from_http("UTF8") == "UNICODE UTF-8"
    assert charset_from_http("US-ASCII") == "ASCII" and charset_from_http("iso-8859-15") == "8859/15"
    for unsupported in ("windows-1252", "UTF-16", "Shift_JIS", "no-such-charset", ""):
        assert charset_from_http(unsupported) is None, unsupported
