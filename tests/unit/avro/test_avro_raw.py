"""Kafka headers in, text out: decoding never raises and received_at parses strictly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.avro.raw import REQUIRED_HEADERS, RawRecord, decode_headers, parse_epoch_micros


def test_decode_headers_utf8_none_and_last_wins() -> None:
    decoded = decode_headers(
        [("hl7.principal_id", b"mailco"), ("hl7.transport", None), ("x", b"caf\xc3\xa9"),
         ("dup", b"first"), ("dup", b"second"), ("bad", b"\xff\xfeok")]
    )
    assert decoded == {"hl7.principal_id": "mailco", "hl7.transport": "", "x": "café",
                       "dup": "second", "bad": "\ufffd\ufffdok"}


def test_decode_headers_accepts_none_and_empty() -> None:
    assert decode_headers(None) == {}
    assert decode_headers([]) == {}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=64), st.text()))))
def test_decode_headers_never_raises(headers: list[tuple[str, bytes | str | None]]) -> None:
    decoded = decode_headers(headers)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.items())
    assert set(decoded) == {name for name, _ in headers}


def test_parse_epoch_micros() -> None:
    assert parse_epoch_micros("1795776224123456") == 1_795_776_224_123_456
    assert parse_epoch_micros(" 42 ") == 42
    assert parse_epoch_micros("0") == 0
    assert parse_epoch_micros("253402300799999999") == 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
    # Before 1970, after 9999 (a datetime reader fails on it), beyond a long, not decimal:
    for bad in (None, "", "+", "-1", "-5", "253402300800000000", str(2**63 - 1), str(2**63),
                "1.5", "1e6", "0x10", "²", "١٢٣", "1" * 5000, "1_000"):
        assert parse_epoch_micros(bad) is None, bad


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_epoch_micros_never_raises(text: str) -> None:
    result = parse_epoch_micros(text)
    assert result is None or 0 <= result <= 253_402_300_799_999_999


def test_raw_record_header_accessors() -> None:
    raw = RawRecord("hl7.raw", 0, 1, None, b"", {"hl7.principal_id": "p", "hl7.transport": "",
                                                   "hl7.received_at": "7"})
    assert raw.principal_id == "p"
    assert raw.transport is None  # empty counts as missing
    assert raw.received_at_us == 7
    assert set(raw.missing_headers) == set(REQUIRED_HEADERS) - {"hl7.principal_id", "hl7.received_at"}
