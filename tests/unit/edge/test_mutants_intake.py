"""Edge request -> record/ACK details: the request's charset, the ACK's own control id and
Content-Type, quoted media-type parameters.

Written to kill mutants that survived ``make mutation`` (docs/mutation.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from processor.edge.intake import ack_content_type, ack_control_id, assess, parse_media_type, reply_ack
from processor.hl7.ack import AckOutcome
from processor.hl7.header import read_header
from processor.reasons import Reason
from processor.registry.loader import load_registry
from processor.registry.model import Registry

SAMPLE = Path(__file__).parents[1] / "registry" / "data" / "sample_registry.yaml"
NOW = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
INGEST = "0b7c6c53-9d1c-4a8e-b8a5-0d7f3c1e2a4b"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(SAMPLE)


def latin1_message(version: str = "2.5") -> bytes:
    """MSH-3 "CAFÉ" in ISO 8859-1 and no MSH-18: readable only with the request's charset."""
    return (
        b"MSH|^~\\&|CAF\xc9|trustalias{trustalias}|PKB|PKB|20240101||ADT^A01^ADT_A01|C1|P|"
        + version.encode()
        + b"\rPID|1||Z\xc9\r"
    )


def run(registry: Registry, payload: bytes, charset: str | None):
    principal = registry.principal("mailco")
    assert principal is not None
    return assess(
        payload,
        registry,
        principal,
        transport="http",
        source_ip="192.0.2.10",
        received_at_us=1_705_314_600_000_000,
        ingest_id=INGEST,
        default_charset=charset,
    )


def segments(ack: bytes) -> list[list[str]]:
    return [s.split("|") for s in ack.decode().split("\r") if s]


def test_request_charset_decides_and_is_stored_as_a_header(registry: Registry) -> None:
    intake = run(registry, latin1_message(), "8859/1")
    assert intake.outcome is AckOutcome.ACCEPT and intake.reason is None
    assert dict(intake.record.headers)["hl7.charset"] == b"8859/1"
    ack, code = reply_ack(intake, stored=True, now=NOW)
    assert code == "AA"
    assert segments(ack)[0][4] == "CAF\u00c9"  # the sender's MSH-3, in the ACK's MSH-5


def test_without_request_charset_no_charset_header(registry: Registry) -> None:
    intake = run(registry, latin1_message(), None)
    assert intake.reason is Reason.MALFORMED_HL7
    assert "hl7.charset" not in dict(intake.record.headers)


def test_malformed_message_read_with_request_charset_gets_the_right_error_and_salvaged_ack(
    registry: Registry,
) -> None:
    """Empty MSH-12: 101 (required field missing), not 102 (undecodable), and the ACK
    swaps in the sender's MSH-3 decoded with the request's charset."""
    intake = run(registry, latin1_message(version=""), "8859/1")
    assert intake.outcome is AckOutcome.REJECT and intake.reason is Reason.MALFORMED_HL7
    ack, code = reply_ack(intake, stored=True, now=NOW)
    assert code == "AR"
    msh, _msa, err = segments(ack)
    assert msh[4] == "CAF\u00c9"
    assert err[3].startswith("101^Required field missing^HL70357^MALFORMED_HL7")


def test_ack_control_id_is_the_first_20_hex_digits_of_the_ingest_id() -> None:
    assert ack_control_id(INGEST) == "0b7c6c539d1c4a8eb8a5"


def test_ack_content_type_names_the_charset_the_ack_is_written_in() -> None:
    media = parse_media_type("application/hl7-v2; charset=ISO-8859-1")
    assert media is not None
    header = read_header(b"MSH|^~\\&|A|ta{tb}|C|D|2024||ADT^A01|C1|P|2.5||||||8859/1\r")
    assert ack_content_type(media, header) == "application/hl7-v2; charset=ISO-8859-1"
    assert ack_content_type(media, None) == "application/hl7-v2; charset=UTF-8"


@pytest.mark.parametrize(
    ("value", "charset"),
    [
        ('text/plain; charset="X-LATIN=1"', "X-LATIN=1"),  # quoted-string value holding "="
        ('text/plain; charset="X-USER-DEFINED"', "X-USER-DEFINED"),
    ],
)
def test_media_type_charset_is_kept_verbatim_inside_quotes(value: str, charset: str) -> None:
    media = parse_media_type(value)
    assert media is not None and media.charset == charset
