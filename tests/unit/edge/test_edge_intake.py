"""Request -> (record, ACK) logic of the edge, without HTTP or Kafka."""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.edge.intake import ack_control_id, ack_text, assess, parse_media_type, reply_ack
from processor.errors import NoMshSegment
from processor.hl7.ack import AckOutcome
from processor.reasons import Reason
from processor.registry.loader import parse_registry
from processor.registry.model import Registry
from tests.builders import registry_yaml
from tests.corpus import seed_message

NOW = datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)
INGEST = "0b7c6c53-9d1c-4a8e-b8a5-0d7f3c1e2a4b"


@functools.cache
def _shared_registry() -> Registry:
    return parse_registry(registry_yaml().encode())


@pytest.fixture(scope="module")
def registry() -> Registry:
    return _shared_registry()


def run(registry: Registry, payload: bytes, principal_id: str = "mailco", transport: str = "http"):  # type: ignore[no-untyped-def]
    principal = registry.principal(principal_id)
    assert principal is not None
    return assess(
        payload,
        registry,
        principal,
        transport=transport,
        source_ip="192.0.2.10",
        received_at_us=1_705_314_600_000_000,
        ingest_id=INGEST,
    )


def segments(ack: bytes) -> list[list[str]]:
    return [s.split("|") for s in ack.decode().split("\r") if s]


def test_seed_message_is_accepted_with_spec_record(registry: Registry) -> None:
    payload = seed_message()
    intake = run(registry, payload)
    assert intake.outcome is AckOutcome.ACCEPT and intake.reason is None
    assert intake.record.value is payload
    assert intake.record.key == b"mailco|trustalias{trustalias}"
    assert dict(intake.record.headers) == {
        "hl7.ingest_id": INGEST.encode(),
        "hl7.principal_id": b"mailco",
        "hl7.principal_type": b"partner",
        "hl7.received_at": b"1705314600000000",
        "hl7.source_ip": b"192.0.2.10",
        "hl7.transport": b"http",
    }
    ack, code = reply_ack(intake, stored=True, now=NOW)
    assert code == "AA"
    msh, msa = segments(ack)[:2]
    assert msa[:3] == ["MSA", "AA", "MSG00001"]
    assert msh[9] == ack_control_id(INGEST) and len(msh[9]) == 20


@pytest.mark.parametrize(
    ("msh4", "principal", "reason"),
    [
        (b"", "mailco", Reason.MSH4_MISSING),
        (b"trustalias", "mailco", Reason.MSH4_SYNTAX),
        (b"nosuch{trustalias}", "mailco", Reason.UNKNOWN_CONNECTING_ALIAS),
        (b"trustalias{nosuch}", "mailco", Reason.UNKNOWN_DATA_CONTROLLER_ALIAS),
        (b"offalias{offalias}", "mailco", Reason.CUSTOMER_NOT_ACTIVE),
        (b"thirdalias{thirdalias}", "mailco", Reason.PARTNER_NOT_AUTHORISED),
        (b"otheralias{otheralias}", "trust-1", Reason.CUSTOMER_ALIAS_MISMATCH),
        (b"trustalias{thirdalias}", "mailco", Reason.DELEGATION_NOT_AUTHORISED),
    ],
)
def test_rejections_are_stored_and_answered_ar_with_reason(
    registry: Registry, msh4: bytes, principal: str, reason: Reason
) -> None:
    intake = run(registry, seed_message(msh4=msh4), principal)
    assert intake.outcome is AckOutcome.REJECT and intake.reason is reason
    assert intake.record.key == f"{principal}|{msh4.decode()}".encode()
    ack, code = reply_ack(intake, stored=True, now=NOW)
    assert code == "AR"
    text = ack.decode()
    assert "MSA|AR|MSG00001|" + reason.value in text
    assert "\rERR|" in text and reason.value in text.split("\rERR|")[1]


def test_delegation_and_customer_login_accepted(registry: Registry) -> None:
    assert run(registry, seed_message(msh4=b"trustalias{otheralias}")).outcome is AckOutcome.ACCEPT
    legacy = run(registry, seed_message(msh4=b"trustalias"), "trust-1")
    assert legacy.outcome is AckOutcome.ACCEPT
    assert dict(legacy.record.headers)["hl7.principal_type"] == b"customer"


def test_no_msh_segment_raises(registry: Registry) -> None:
    with pytest.raises(NoMshSegment):
        run(registry, b"PID|1||123\r")


def test_malformed_msh_is_stored_and_rejected_with_salvaged_ack(registry: Registry) -> None:
    intake = run(registry, b"MSH|^~\\&|broken\r")
    assert intake.outcome is AckOutcome.REJECT and intake.reason is Reason.MALFORMED_HL7
    assert intake.record.key == b"mailco|"  # MSH-4 is empty
    ack, code = reply_ack(intake, stored=True, now=NOW)
    assert code == "AR" and ack.startswith(b"MSH|^~\\&|||broken||")  # MSH-3 swapped into MSH-5
    assert b"|101^Required field missing^HL70357^MALFORMED_HL7" in ack


def test_key_is_utf8_even_when_msh4_bytes_do_not_decode(registry: Registry) -> None:
    intake = run(registry, seed_message(msh4=b"trust\xe9alias{trustalias}"))  # Latin-1, no MSH-18
    assert intake.outcome is AckOutcome.REJECT and intake.reason is Reason.MALFORMED_HL7
    assert intake.record.key.decode("utf-8") == "mailco|trust\ufffdalias{trustalias}"


def test_unusable_delimiters_keep_the_default_ack(registry: Registry) -> None:
    intake = run(registry, b"MSH|ab\\&|A|FAC|C|D|2024||ADT^A01|C1|P|2.5\r")
    assert intake.outcome is AckOutcome.REJECT and intake.reason is Reason.MALFORMED_HL7
    assert intake.header is None and intake.record.key == b"mailco|"
    ack, code = reply_ack(intake, stored=True, now=NOW)
    assert code == "AR" and ack.startswith(b"MSH|^~\\&|||||")
    assert b"\rMSA|AR||MALFORMED_HL7" in ack and b"|102^Data type error^" in ack


def test_storage_failure_gives_error_ack_enhanced_mode_too(registry: Registry) -> None:
    payload = seed_message().replace(b"|P|2.4\r", b"|P|2.4|||AL|NE\r")
    intake = run(registry, payload)
    assert intake.ack_code == "CA"
    ack, code = reply_ack(intake, stored=False, now=NOW)
    assert code == "CE"
    assert b"MSA|CE|MSG00001|" in ack
    ack, code = reply_ack(intake, stored=True, now=NOW)
    assert code == "CA"


def test_ack_text_decodes_declared_charset(registry: Registry) -> None:
    payload = seed_message().replace(b"|P|2.4\r", b"|P|2.4||||||8859/1\r").replace(b"PAS", b"P\xc4S")
    intake = run(registry, payload)
    ack, _ = reply_ack(intake, stored=True, now=NOW)
    assert "P\u00c4S" in ack_text(ack, intake.header)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/hl7-v2", ("application/hl7-v2", None)),
        ("Application/HL7-v2; charset=UTF-8", ("application/hl7-v2", "UTF-8")),
        ('text/plain;charset="iso-8859-1"', ("text/plain", "iso-8859-1")),
        ("text/xml; charset=utf-8", ("text/xml", "utf-8")),
    ],
)
def test_parse_media_type(value: str, expected: tuple[str, str | None]) -> None:
    media = parse_media_type(value)
    assert media is not None and (media.type, media.charset) == expected


@pytest.mark.parametrize("value", [None, "", "hl7", "/", "text/", ";charset=utf-8"])
def test_parse_media_type_refuses(value: str | None) -> None:
    assert parse_media_type(value) is None


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_parse_media_type_never_raises(value: str) -> None:
    parse_media_type(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_assess_never_raises_anything_but_no_msh(data: bytes) -> None:
    registry = _shared_registry()
    for payload in (data, b"MSH|^~\\&|" + data):
        try:
            intake = run(registry, payload)
        except NoMshSegment:
            continue
        assert intake.record.value == payload
        reply_ack(intake, stored=True, now=NOW)
        reply_ack(intake, stored=False, now=NOW)


def test_key_of_a_long_msh4_is_its_sha256(registry: Registry) -> None:
    """SPEC 5: an MSH-4 over 256 bytes is replaced in the key by sha256:<hex>."""
    msh4 = b"trustalias{trustalias}^" + b"x" * 300
    intake = run(registry, seed_message(msh4=msh4))
    assert intake.header is not None and intake.header.sending_facility_raw == msh4.decode()
    assert intake.record.key == b"mailco|sha256:" + hashlib.sha256(msh4).hexdigest().encode()
    short = b"trustalias{trustalias}^" + b"x" * (256 - 23)
    assert run(registry, seed_message(msh4=short)).record.key == b"mailco|" + short
