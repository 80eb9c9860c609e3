"""Decision details, registry version and the header a rejection carries (SPEC 3).

Written to kill mutants that survived ``make mutation`` (docs/mutation.md): what a
dead letter / ``explain`` shows (exact detail, registry version, MSH fields read with
the request's character set), and what the operator's log says when deciding fails.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from processor.decision import Accepted, Rejected, decide
from processor.reasons import Reason
from processor.registry.loader import load_registry
from processor.registry.model import PrincipalType, Registry

SAMPLE = Path(__file__).parent / "registry" / "data" / "sample_registry.yaml"
P = PrincipalType.PARTNER


def message(msh4: str = "trustalias{trustalias}", *, app: bytes = b"SENDAPP", msh18: str = "") -> bytes:
    tail = f"||||||{msh18}" if msh18 else ""
    msh = b"MSH|^~\\&|" + app + f"|{msh4}|PKB|PKB|20240101120000||ADT^A01^ADT_A01|CTRL-1|P|2.5{tail}".encode()
    return msh + b"\rPID|1||9990000001\r"


LATIN1 = message(app=b"CAF\xc9")  # MSH-3 "CAFÉ" in ISO 8859-1, no MSH-18


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(SAMPLE)


def test_unknown_principal_and_bad_type_have_distinct_details(registry: Registry) -> None:
    unknown = decide(registry, "nobody", P, message())
    bad_type = decide(registry, "mailco", "PARTNER", message())
    assert isinstance(unknown, Rejected) and isinstance(bad_type, Rejected)
    assert (unknown.reason, unknown.detail) == (Reason.PRINCIPAL_UNKNOWN, "principal id not in registry")
    assert (bad_type.reason, bad_type.detail) == (
        Reason.PRINCIPAL_UNKNOWN,
        "principal type is not 'partner' or 'customer'",
    )


def test_row2_and_row3_rejections_carry_the_header_read_with_the_request_charset(registry: Registry) -> None:
    for principal, ptype, reason in (
        ("nobody", P, Reason.PRINCIPAL_UNKNOWN),
        ("printco", P, Reason.PRINCIPAL_NOT_ACTIVE),
    ):
        result = decide(registry, principal, ptype, LATIN1, "8859/1")
        assert isinstance(result, Rejected) and result.reason is reason
        assert result.header is not None
        assert result.header.message_control_id == "CTRL-1"
        assert result.header.sending_application == "CAF\u00c9"


def test_malformed_detail_names_the_failing_rule(registry: Registry) -> None:
    result = decide(registry, "mailco", P, message().replace(b"|2.5\r", b"|\r"))
    assert isinstance(result, Rejected) and result.reason is Reason.MALFORMED_HL7
    assert result.detail == "MSH-12 version id is empty" and result.header is None


@pytest.mark.parametrize(
    ("payload", "charset", "detail"),
    [
        (
            message(app=b"SENDAPP") + "PID|2||\u20ac".encode("utf-8"),
            "ASCII",
            "message bytes do not decode in the character set of the request",
        ),
        (
            message(msh18="ASCII") + "PID|2||\u20ac".encode("utf-8"),
            None,
            "message bytes do not decode in the character set of MSH-18",
        ),
        (
            message() + b"PID|2||\xc9\r",
            None,
            "message bytes are not UTF-8 and MSH-18 declares no character set",
        ),
    ],
    ids=["request-charset", "msh18", "no-charset"],
)
def test_undecodable_body_details(
    registry: Registry, payload: bytes, charset: str | None, detail: str
) -> None:
    result = decide(registry, "mailco", P, payload, charset)
    assert isinstance(result, Rejected) and result.reason is Reason.MALFORMED_HL7
    assert result.detail == detail
    assert result.registry_version == registry.version
    assert result.header is not None and result.header.message_control_id == "CTRL-1"


def test_both_inactive_customers_are_named(registry: Registry) -> None:
    result = decide(registry, "mailco", P, message("oldalias{closedalias}"))
    assert isinstance(result, Rejected) and result.reason is Reason.CUSTOMER_NOT_ACTIVE
    assert result.detail == "customer old-1, closed-1 is not active"


class _BrokenRegistry:
    """A registry whose look-ups fail (a bug elsewhere): decide must still answer."""

    def __init__(self, version: object) -> None:
        self._version = version

    @property
    def version(self) -> str:
        if isinstance(self._version, Exception):
            raise self._version
        return str(self._version)

    def principal(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("registry look-up failed")


def test_unexpected_error_is_a_processing_error_with_header_and_log(caplog: pytest.LogCaptureFixture) -> None:
    broken: Registry = _BrokenRegistry("v42")  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="processor.decision"):
        result = decide(broken, "mailco", P, LATIN1, "8859/1")
    assert isinstance(result, Rejected)
    assert result.reason is Reason.PROCESSING_ERROR
    assert result.detail == "unexpected RuntimeError while deciding"
    assert result.registry_version == "v42"
    assert result.header is not None and result.header.sending_application == "CAF\u00c9"
    assert [r.getMessage() for r in caplog.records] == [
        "decision failed for principal 'mailco': RuntimeError"
    ]


def test_unreadable_registry_version_is_reported_as_unknown() -> None:
    broken: Registry = _BrokenRegistry(KeyError("version"))  # type: ignore[assignment]
    result = decide(broken, "mailco", P, message())
    assert isinstance(result, Rejected) and result.reason is Reason.PROCESSING_ERROR
    assert result.registry_version == "unknown"
    assert result.detail == "unexpected KeyError while deciding"


def test_rejections_after_row7_name_the_customers_already_resolved(registry: Registry) -> None:
    row8 = decide(registry, "mailco", P, message("trustalias{nosuch}"))
    assert isinstance(row8, Rejected) and row8.reason is Reason.UNKNOWN_DATA_CONTROLLER_ALIAS
    assert (row8.connecting_customer_id, row8.data_controller_id) == ("trust-1", None)
    row10 = decide(registry, "otherco", P, message("trustalias{gpalias}"))
    assert isinstance(row10, Rejected) and row10.reason is Reason.PARTNER_NOT_AUTHORISED
    assert (row10.connecting_customer_id, row10.data_controller_id) == ("trust-1", "gp-1")


def test_a_customer_plain_msh4_longer_than_the_cache_key_is_still_its_own_alias(registry: Registry) -> None:
    result = decide(registry, "trust-1", PrincipalType.CUSTOMER, message("RXH01-" + "W" * 200))
    assert isinstance(result, Accepted)
    assert (result.connecting_alias, result.data_controller_alias) == ("trustalias", "trustalias")
