"""Kafka headers in, text out: decoding never raises and received_at parses strictly."""

from __future__ import annotations

import hashlib
import ipaddress
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.raw import (
    MAX_KEY_MSH4_BYTES,
    REQUIRED_HEADERS,
    DecodedHeaders,
    RawRecord,
    decode_headers,
    is_ip_address_text,
    is_uuid_text,
    parse_epoch_micros,
    raw_record_key,
)


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


# --------------------------------------------------------------- raw_record_key (SPEC 5)


def test_raw_record_key_keeps_an_msh4_of_256_bytes() -> None:
    msh4 = "a" * 254 + "é"  # 256 bytes in UTF-8
    assert len(msh4.encode()) == MAX_KEY_MSH4_BYTES == 256
    assert raw_record_key("mailco", msh4) == ("mailco|" + msh4).encode()
    assert raw_record_key("mailco", "trustalias{trustalias}") == b"mailco|trustalias{trustalias}"
    assert raw_record_key("mailco", "") == b"mailco|"


def test_raw_record_key_hashes_an_msh4_of_257_bytes() -> None:
    msh4 = "a" * 255 + "é"  # 257 bytes in UTF-8, 256 characters
    key = raw_record_key("mailco", msh4)
    assert key == b"mailco|sha256:" + hashlib.sha256(msh4.encode()).hexdigest().encode()
    assert len(key) == len("mailco|sha256:") + 64


def test_raw_record_key_hash_is_over_the_exact_bytes_received() -> None:
    wire = b"trust\xe9alias{trustalias}" * 20  # Latin-1 bytes, not UTF-8: 440 bytes
    msh4 = wire.decode("utf-8", "surrogateescape")  # as salvage_header returns them
    assert raw_record_key("trust-1", msh4) == b"trust-1|sha256:" + hashlib.sha256(wire).hexdigest().encode()


def test_raw_record_key_short_non_utf8_msh4_becomes_replacement_characters() -> None:
    msh4 = b"trust\xe9alias{trustalias}".decode("utf-8", "surrogateescape")
    key = raw_record_key("mailco", msh4)
    assert key.decode("utf-8") == "mailco|trust\ufffdalias{trustalias}"
    # 256 undecodable bytes are still kept (the bound counts bytes as received) ...
    kept = raw_record_key("p", (b"\xff" * 256).decode("utf-8", "surrogateescape"))
    assert kept.decode("utf-8") == "p|" + "\ufffd" * 256
    # ... and 257 are hashed as they are.
    hashed = raw_record_key("p", (b"\xff" * 257).decode("utf-8", "surrogateescape"))
    assert hashed == b"p|sha256:" + hashlib.sha256(b"\xff" * 257).hexdigest().encode()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_raw_record_key_is_utf8_and_bounded(wire: bytes) -> None:
    key = raw_record_key("mailco", wire.decode("utf-8", "surrogateescape"))
    key.decode("utf-8")  # always valid UTF-8
    tail = key[len(b"mailco|"):]
    if len(wire) > 256:
        assert tail == b"sha256:" + hashlib.sha256(wire).hexdigest().encode()
    else:
        assert tail == wire.decode("utf-8", "replace").encode()


# --------------------------------------------------------------- row 1 inputs


def test_decode_headers_names_headers_seen_more_than_once() -> None:
    decoded = decode_headers(
        [("hl7.principal_id", b"a"), ("x", b"1"), ("hl7.principal_id", b"b"), ("x", None),
         ("hl7.principal_id", b"c"), ("y", b"2")]
    )
    assert decoded == {"hl7.principal_id": "c", "x": "", "y": "2"}  # last value wins, as before
    assert isinstance(decoded, DecodedHeaders) and decoded.duplicates == ("hl7.principal_id", "x")
    raw = RawRecord("hl7.raw", 0, 1, None, b"", decoded)
    assert raw.duplicate_headers == ("hl7.principal_id", "x")
    assert raw.principal_id == "c"


def test_decode_headers_without_repetition_is_a_plain_dict() -> None:
    """Routing's fast path relies on it: a plain dict means no name came twice."""
    decoded = decode_headers([("hl7.principal_id", b"a"), ("x", b"1")])
    assert decoded.__class__ is dict
    assert RawRecord("hl7.raw", 0, 1, None, b"", decoded).duplicate_headers == ()
    assert RawRecord("hl7.raw", 0, 1, None, b"", {"a": "b"}).duplicate_headers == ()


def test_decode_headers_takes_any_iterable() -> None:
    pairs = [("a", b"1"), ("a", b"2")]
    from_generator = decode_headers(pair for pair in pairs)
    assert from_generator == {"a": "2"} and from_generator.duplicates == ("a",)  # type: ignore[attr-defined]
    assert decode_headers(tuple(pairs)) == {"a": "2"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "hl7.ingest_id"]), st.binary(max_size=4)), max_size=8))
def test_decode_headers_duplicates_match_a_count(headers: list[tuple[str, bytes]]) -> None:
    decoded = decode_headers(headers)
    names = [name for name, _ in headers]
    assert set(getattr(decoded, "duplicates", ())) == {n for n in names if names.count(n) > 1}
    assert decoded == {name: value.decode("utf-8", "replace") for name, value in headers}


def test_is_uuid_text_canonical_form_in_either_case() -> None:
    for _ in range(50):
        text = str(uuid.uuid4())
        assert is_uuid_text(text) and is_uuid_text(text.upper())
    assert is_uuid_text("00000000-0000-0000-0000-000000000000")
    u = "0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11"
    for bad in (None, "", u.replace("-", ""), "{" + u + "}", "urn:uuid:" + u, u + " ", " " + u, u + "\n",
                u[:-1] + "g", u[:-1], u + "0", u[:8] + "_" + u[9:], u.replace("-", "+"),
                u[:-1] + "\u0661", u[:-1] + "\uff10"):
        assert not is_uuid_text(bad), bad


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
                 st.text(alphabet="0123456789abcdefABCDEF-", min_size=30, max_size=40)))
def test_is_uuid_text_accepts_only_what_uuid_parses_to_itself(text: str) -> None:
    if is_uuid_text(text):
        assert str(uuid.UUID(text)) == text.lower()  # parses, and is the canonical spelling
    else:
        try:
            parsed = str(uuid.UUID(text))
        except ValueError:
            return
        assert parsed != text.lower()  # uuid.UUID takes it, but not in canonical form


@pytest.mark.parametrize(
    "text", ["203.0.113.7", "0.0.0.0", "2001:db8::1", "::", "::ffff:192.0.2.1", "fe80::1%eth0", "fe80::1%2",
             "FE80::A%en0.100", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"],
)
def test_is_ip_address_text_accepts_addresses(text: str) -> None:
    assert is_ip_address_text(text) and is_ip_address_text(text)  # twice: cached the second time


@pytest.mark.parametrize(
    "text", [None, "", "<script>", "203.0.113", "203.0.113.07", "203.0.113.7 ", "203.0.113.7/32",
             "203.0.113.7%eth0", "fe80::1%", "fe80::1%<script>", "fe80::1%eth 0", "2001:db8::g",
             "::1" + " " * 70, "1" * 10_000, "localhost", "١٢٣.1.1.1"],
)
def test_is_ip_address_text_refuses_anything_else(text: str | None) -> None:
    assert not is_ip_address_text(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.ip_addresses().map(str), st.text(max_size=50)))
def test_is_ip_address_text_agrees_with_ipaddress(text: str) -> None:
    try:
        ipaddress.ip_address(text)
        parses = "%" not in text  # zone ids are restricted further (tested above)
    except ValueError:
        parses = False
    if "%" not in text:
        assert is_ip_address_text(text) is parses
    elif is_ip_address_text(text):
        ipaddress.ip_address(text)
