"""The decision table (SPEC 3, rows 2-11): every row, both principal types, in order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import processor.decision as decision_module
from processor.decision import Accepted, Rejected, decide
from processor.hl7.charset import codec_for
from processor.reasons import Reason
from processor.registry.loader import load_registry
from processor.registry.model import PrincipalType, Registry
from tests import contract
from tests.builders import adt_a01

SAMPLE = Path(__file__).parent / "registry" / "data" / "sample_registry.yaml"
PATIENT_MARKER = "ZZPATIENTNAMEZZ"
CONTROL_ID = "CTRL-4711"

P = PrincipalType.PARTNER
C = PrincipalType.CUSTOMER


def message(msh4: str, *, control_id: str = CONTROL_ID, sep: str = "\r", msh15: str = "") -> bytes:
    """A small ADT^A01 with MSH-4 as given (verbatim, already escaped)."""
    return adt_a01(msh4, control_id=control_id, sep=sep, msh15=msh15, patient=f"{PATIENT_MARKER}^TEST")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(SAMPLE)


# (principal id, type, payload, expected reason or None for accept)
ROWS: list[tuple[str, str, PrincipalType | str, bytes, Reason | None]] = [
    # row 2: principal exists (with this type)
    ("r2-unknown-id", "nobody", P, message("trustalias{trustalias}"), Reason.PRINCIPAL_UNKNOWN),
    ("r2-partner-as-customer", "mailco", C, message("trustalias{trustalias}"), Reason.PRINCIPAL_UNKNOWN),
    ("r2-customer-as-partner", "trust-1", P, message("trustalias{trustalias}"), Reason.PRINCIPAL_UNKNOWN),
    ("r2-bad-type", "mailco", "PARTNER", message("trustalias{trustalias}"), Reason.PRINCIPAL_UNKNOWN),
    ("r2-before-r4", "nobody", P, b"garbage", Reason.PRINCIPAL_UNKNOWN),
    # row 3: principal active
    ("r3-partner", "printco", P, message("trustalias{trustalias}"), Reason.PRINCIPAL_NOT_ACTIVE),
    ("r3-customer", "dormant-1", C, message("dormantalias"), Reason.PRINCIPAL_NOT_ACTIVE),
    ("r3-customer-facility-code", "dormant-1", C, message("RXH01"), Reason.PRINCIPAL_NOT_ACTIVE),
    ("r3-before-r4", "printco", P, b"", Reason.PRINCIPAL_NOT_ACTIVE),
    # row 4: MSH parses
    ("r4-empty", "mailco", P, b"", Reason.MALFORMED_HL7),
    ("r4-no-msh", "mailco", P, b"PID|1||x\r", Reason.MALFORMED_HL7),
    ("r4-truncated", "mailco", P, b"MSH|^~\\&|APP", Reason.MALFORMED_HL7),
    ("r4-customer", "trust-1", C, b"\x00\x01\x02", Reason.MALFORMED_HL7),
    # row 5: MSH-4.1 non-empty
    ("r5-empty", "mailco", P, message(""), Reason.MSH4_MISSING),
    ("r5-empty-first-component", "mailco", P, message("^1.2.3^ISO"), Reason.MSH4_MISSING),
    ("r5-customer", "trust-1", C, message(""), Reason.MSH4_MISSING),
    # row 6: MSH-4.1 syntax
    ("r6-partner-plain", "mailco", P, message("trustalias"), Reason.MSH4_SYNTAX),
    ("r6-leading-space", "mailco", P, message(" trustalias{trustalias}"), Reason.MSH4_SYNTAX),
    ("r6-trailing-space", "mailco", P, message("trustalias{trustalias} "), Reason.MSH4_SYNTAX),
    ("r6-unclosed", "mailco", P, message("trustalias{trustalias"), Reason.MSH4_SYNTAX),
    ("r6-trailing-text", "mailco", P, message("trustalias{trustalias}x"), Reason.MSH4_SYNTAX),
    ("r6-empty-controller", "mailco", P, message("trustalias{}"), Reason.MSH4_SYNTAX),
    ("r6-bad-char", "mailco", P, message("trust alias{trustalias}"), Reason.MSH4_SYNTAX),
    ("r6-escaped-delimiter", "mailco", P, message("trustalias\\T\\{trustalias}"), Reason.MSH4_SYNTAX),
    ("r6-partner-facility-code", "mailco", P, message("RXH01"), Reason.MSH4_SYNTAX),
    ("r6-customer-leading-space", "trust-1", C, message(" RXH01"), Reason.MSH4_SYNTAX),
    ("r6-customer-trailing-space", "trust-1", C, message("trustalias "), Reason.MSH4_SYNTAX),
    ("r6-customer-half-brace", "trust-1", C, message("trustalias}"), Reason.MSH4_SYNTAX),
    ("r6-customer-half-open", "trust-1", C, message("RXH{01"), Reason.MSH4_SYNTAX),
    # row 7: A known
    ("r7-partner", "mailco", P, message("nosuch{trustalias}"), Reason.UNKNOWN_CONNECTING_ALIAS),
    ("r7-case-sensitive", "mailco", P, message("TRUSTALIAS{trustalias}"), Reason.UNKNOWN_CONNECTING_ALIAS),
    ("r7-customer", "trust-1", C, message("nosuch{trustalias}"), Reason.UNKNOWN_CONNECTING_ALIAS),
    ("r7-before-r8", "mailco", P, message("nosuch{nosuch2}"), Reason.UNKNOWN_CONNECTING_ALIAS),
    # row 8: B known
    ("r8-partner", "mailco", P, message("trustalias{nosuch}"), Reason.UNKNOWN_DATA_CONTROLLER_ALIAS),
    ("r8-customer", "trust-1", C, message("trustalias{nosuch}"), Reason.UNKNOWN_DATA_CONTROLLER_ALIAS),
    # row 9: both customers active
    ("r9-connecting-inactive", "mailco", P, message("oldalias{oldalias}"), Reason.CUSTOMER_NOT_ACTIVE),
    ("r9-controller-inactive", "mailco", P, message("trustalias{closedalias}"), Reason.CUSTOMER_NOT_ACTIVE),
    ("r9-customer-controller-inactive", "trust-1", C, message("trustalias{closedalias}"), Reason.CUSTOMER_NOT_ACTIVE),
    ("r9-before-r10", "otherco", P, message("oldalias{oldalias}"), Reason.CUSTOMER_NOT_ACTIVE),
    # row 10
    ("r10-partner-not-granted", "otherco", P, message("trustalias{trustalias}"), Reason.PARTNER_NOT_AUTHORISED),
    ("r10-partner-other-customer", "mailco", P, message("gpalias{gpalias}"), Reason.PARTNER_NOT_AUTHORISED),
    ("r10-before-r11", "otherco", P, message("trustalias{gp2alias}"), Reason.PARTNER_NOT_AUTHORISED),
    ("r10-customer-other-alias", "trust-1", C, message("gpalias{gpalias}"), Reason.CUSTOMER_ALIAS_MISMATCH),
    ("r10-customer-no-login", "gp-1", C, message("trustalias{gpalias}"), Reason.CUSTOMER_ALIAS_MISMATCH),
    # row 11: delegation
    ("r11-partner", "mailco", P, message("trustalias{gp2alias}"), Reason.DELEGATION_NOT_AUTHORISED),
    ("r11-customer", "trust-1", C, message("trustalias{gp2alias}"), Reason.DELEGATION_NOT_AUTHORISED),
    ("r11-reverse-direction", "gp-1", C, message("gpalias{trustalias}"), Reason.DELEGATION_NOT_AUTHORISED),
    # accepted
    ("ok-partner-same", "mailco", P, message("trustalias{trustalias}"), None),
    ("ok-partner-delegated", "mailco", P, message("trustalias{gpalias}"), None),
    ("ok-partner-type-as-str", "mailco", "partner", message("trustalias{trustalias}"), None),
    ("ok-customer-own", "trust-1", C, message("trustalias{trustalias}"), None),
    ("ok-customer-legacy", "trust-1", C, message("trustalias"), None),
    ("ok-customer-facility-code", "trust-1", C, message("RXH01"), None),
    ("ok-customer-plain-unknown-alias", "trust-1", C, message("nosuch"), None),
    ("ok-customer-plain-other-alias", "trust-1", C, message("gpalias"), None),
    ("ok-customer-plain-any-text", "trust-1", C, message("RX H01/ward 7"), None),
    ("ok-customer-plain-without-login", "gp-1", C, message("RXH01"), None),
    ("ok-customer-delegated", "trust-1", C, message("trustalias{gpalias}"), None),
    ("ok-customer-without-login", "gp-1", C, message("gpalias{gpalias}"), None),
    ("ok-hd-components", "mailco", P, message("trustalias{trustalias}^1.2.3^ISO"), None),
    ("ok-lf-segments", "mailco", P, message("trustalias{trustalias}", sep="\n"), None),
    ("ok-crlf-segments", "mailco", P, message("trustalias{trustalias}", sep="\r\n"), None),
    ("ok-enhanced-mode", "mailco", P, message("trustalias{trustalias}", msh15="AL"), None),
]


@pytest.mark.parametrize(
    ("principal", "ptype", "payload", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decision_table(
    registry: Registry,
    principal: str,
    ptype: PrincipalType | str,
    payload: bytes,
    expected: Reason | None,
) -> None:
    result = decide(registry, principal, ptype, payload)
    assert result.registry_version == registry.version
    if expected is None:
        assert isinstance(result, Accepted), result
    else:
        assert isinstance(result, Rejected)
        assert result.reason is expected, result.detail
        assert PATIENT_MARKER not in result.detail
        assert CONTROL_ID not in result.detail
        assert result.detail


def test_every_reason_code_of_the_decided_rows_is_covered() -> None:
    """ROWS reach every reason code of SPEC 3 rows 2-11 (the rows ``decide`` evaluates), as
    transcribed in tests/contract.py: never compared with the code's own enum, so a reason
    dropped from both the code and ROWS is still missed here."""
    covered = {row[4].value for row in ROWS if row[4] is not None}
    assert covered == contract.reasons_of_rows(*contract.DECIDE_ROWS)


def test_accepted_names_connecting_customer_and_data_controller(registry: Registry) -> None:
    result = decide(registry, "mailco", P, message("trustalias{gpalias}", control_id="C42"))
    assert isinstance(result, Accepted)
    assert (result.connecting_customer_id, result.connecting_alias) == ("trust-1", "trustalias")
    assert (result.data_controller_id, result.data_controller_alias) == ("gp-1", "gpalias")
    assert result.header.message_control_id == "C42"
    assert result.header.sending_facility_raw == "trustalias{gpalias}"


def test_legacy_customer_value_means_own_alias_twice(registry: Registry) -> None:
    result = decide(registry, "trust-1", C, message("trustalias"))
    assert isinstance(result, Accepted)
    assert result.connecting_customer_id == result.data_controller_id == "trust-1"
    assert result.header.sending_facility_raw == "trustalias"


@pytest.mark.parametrize("msh4", ["RXH01", "RXH01^1.2.3^ISO", "gpalias", "nosuch"])
def test_customer_plain_value_whatever_it_is_means_own_alias_twice(registry: Registry, msh4: str) -> None:
    """SPEC 3 row 6: a customer login sending its facility code (RXH01), not its alias."""
    result = decide(registry, "trust-1", C, message(msh4))
    assert isinstance(result, Accepted), result
    assert (result.connecting_customer_id, result.connecting_alias) == ("trust-1", "trustalias")
    assert (result.data_controller_id, result.data_controller_alias) == ("trust-1", "trustalias")
    assert result.header.sending_facility_raw == msh4  # the header field, as received


def test_same_plain_value_from_two_customers_resolves_to_each_own_alias(registry: Registry) -> None:
    """The memo and the MSH-4 cache must not hand one customer's alias to another."""
    for _ in range(2):  # the second round is served from the memo
        for principal, cid, alias in (("trust-1", "trust-1", "trustalias"), ("gp-1", "gp-1", "gpalias"),
                                      ("gp-2", "gp-2", "gp2alias")):
            result = decide(registry, principal, C, message("RXH01"))
            assert isinstance(result, Accepted), result
            assert (result.connecting_customer_id, result.connecting_alias) == (cid, alias)
            assert (result.data_controller_id, result.data_controller_alias) == (cid, alias)
        refused = decide(registry, "mailco", P, message("RXH01"))
        assert isinstance(refused, Rejected) and refused.reason is Reason.MSH4_SYNTAX


def test_customer_plain_value_still_goes_through_row_9(registry: Registry) -> None:
    """An inactive customer's own login is refused at row 3 already; rows 7-11 still run for a
    legacy value, so were the principal seen as active, row 9 would refuse its inactive customer."""
    refused = decide(registry, "dormant-1", C, message("RXH01"))
    assert isinstance(refused, Rejected) and refused.reason is Reason.PRINCIPAL_NOT_ACTIVE
    principal = registry.principal("dormant-1")
    assert principal is not None and not principal.active
    active_view = dataclasses.replace(principal, active=True)
    outcome = decision_module._rows_5_to_11(registry, active_view, C, "RXH01")
    assert outcome == decision_module.RowsFailed(
        Reason.CUSTOMER_NOT_ACTIVE, "customer dormant-1 is not active", "dormant-1", "dormant-1"
    )


def test_rejection_keeps_header_and_resolved_ids(registry: Registry) -> None:
    result = decide(registry, "mailco", P, message("trustalias{gp2alias}", control_id="C7"))
    assert isinstance(result, Rejected)
    assert result.header is not None and result.header.message_control_id == "C7"
    assert (result.connecting_customer_id, result.data_controller_id) == ("trust-1", "gp-2")


def test_unknown_principal_still_reports_readable_header(registry: Registry) -> None:
    result = decide(registry, "nobody", P, message("trustalias{trustalias}", control_id="C9"))
    assert isinstance(result, Rejected) and result.reason is Reason.PRINCIPAL_UNKNOWN
    assert result.header is not None and result.header.message_control_id == "C9"


def test_malformed_has_no_header(registry: Registry) -> None:
    result = decide(registry, "mailco", P, b"not hl7 at all")
    assert isinstance(result, Rejected) and result.header is None


def test_long_unknown_alias_is_not_echoed_in_full(registry: Registry) -> None:
    alias = "x" * 500
    result = decide(registry, "mailco", P, message(f"{alias}{{trustalias}}"))
    assert isinstance(result, Rejected) and result.reason is Reason.UNKNOWN_CONNECTING_ALIAS
    assert alias not in result.detail and len(result.detail) < 150


@pytest.mark.parametrize(
    ("principal", "ptype", "msh4", "reason", "detail"),
    [
        ("mailco", P, "nosuchalias{trustalias}", Reason.UNKNOWN_CONNECTING_ALIAS,
         "connecting alias is not a known customer"),
        ("mailco", P, "trustalias{nosuchalias}", Reason.UNKNOWN_DATA_CONTROLLER_ALIAS,
         "data controller alias is not a known customer"),
        ("trust-1", C, "gpalias{gpalias}", Reason.CUSTOMER_ALIAS_MISMATCH,
         "connecting customer gp-1 is not the sending customer trust-1"),
    ],
)
def test_details_never_quote_an_alias_from_the_message(
    registry: Registry, principal: str, ptype: PrincipalType, msh4: str, reason: Reason, detail: str
) -> None:
    """SPEC 3: reason detail texts never quote message content (not even a known alias)."""
    result = decide(registry, principal, ptype, message(msh4))
    assert isinstance(result, Rejected) and result.reason is reason
    assert result.detail == detail
    assert "alias{" not in result.detail and "nosuchalias" not in result.detail
    assert "gpalias" not in result.detail and "trustalias" not in result.detail


_MSH4_PART = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="|\r\n^&~\\"), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.sampled_from(["", "trustalias{", "nosuch{", "{", " "]) | _MSH4_PART,
    after=st.sampled_from(["", "}", "{trustalias}", " "]) | _MSH4_PART,
    principal=st.sampled_from([("mailco", P), ("trust-1", C), ("gp-1", C), ("otherco", P)]),
)
def test_no_detail_quotes_msh4(
    registry: Registry, before: str, after: str, principal: tuple[str, PrincipalType]
) -> None:
    result = decide(registry, principal[0], principal[1], message(before + "QQMARKQQ" + after))
    if isinstance(result, Rejected):
        assert "QQMARKQQ" not in result.detail


def test_unexpected_error_becomes_processing_error(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_data: bytes) -> None:
        raise RuntimeError(PATIENT_MARKER)

    monkeypatch.setattr(decision_module, "read_header", boom)
    result = decide(registry, "mailco", P, message("trustalias{trustalias}"))
    assert isinstance(result, Rejected)
    assert result.reason is Reason.PROCESSING_ERROR
    assert result.registry_version == registry.version
    assert PATIENT_MARKER not in result.detail


def test_broken_registry_object_becomes_processing_error() -> None:
    class Broken:
        version = "abc123abc123"

        def principal(self, *_a: object) -> None:
            raise KeyError("boom")

    result = decide(Broken(), "mailco", P, message("trustalias{trustalias}"))  # type: ignore[arg-type]
    assert isinstance(result, Rejected) and result.reason is Reason.PROCESSING_ERROR
    assert result.registry_version == "abc123abc123"


@settings(max_examples=200, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=60).map(lambda m: message(m)),
        st.builds(lambda b: b"MSH|^~\\&|A|" + b + b"|B|C|2024||ADT^A01|X|P|2.5\r", st.binary(max_size=40)),
    ),
    principal=st.sampled_from(["mailco", "trust-1", "gp-1", "printco", "nobody", ""]),
    ptype=st.sampled_from(["partner", "customer", "x"]),
)
def test_decide_never_raises_and_is_deterministic(
    registry: Registry, payload: bytes, principal: str, ptype: str
) -> None:
    first = decide(registry, principal, ptype, payload)
    assert isinstance(first, (Accepted, Rejected))
    assert first == decide(registry, principal, ptype, payload)
    if isinstance(first, Rejected):
        assert first.reason is not Reason.PROCESSING_ERROR


@pytest.mark.parametrize(
    ("msh18", "body", "reason"),
    [
        ("", "PID|1||X||M\u00dcLLER".encode("utf-8"), None),
        ("UNICODE UTF-8", "PID|1||X||M\u00dcLLER".encode("utf-8"), None),
        ("UNICODE UTF-8", "PID|1||X||M\u00dcLLER".encode("latin-1"), Reason.MALFORMED_HL7),
        ("", "PID|1||X||M\u00dcLLER".encode("latin-1"), Reason.MALFORMED_HL7),
        ("8859/1", "PID|1||X||M\u00dcLLER".encode("latin-1"), None),
    ],
)
def test_row4_whole_message_must_decode_in_its_declared_charset(
    registry: Registry, msh18: str, body: bytes, reason: Reason | None
) -> None:
    head = message("trustalias{trustalias}").split(b"\r", 1)[0]
    msg = head + (b"||||||" + msh18.encode() if msh18 else b"") + b"\r" + body + b"\r"  # MSH-18
    decision = decide(registry, "mailco", P, msg)
    if reason is None:
        assert isinstance(decision, Accepted)
    else:
        assert isinstance(decision, Rejected) and decision.reason is reason
        assert decision.header is not None  # readable MSH: the ACK can still honour it
        assert "\u00dc" not in decision.detail and "LLER" not in decision.detail


@pytest.mark.parametrize(
    ("msh18", "default", "encoding", "reason"),
    [
        ("", "8859/1", "latin-1", None),  # declared on the request only: applies
        ("", None, "latin-1", Reason.MALFORMED_HL7),  # declared nowhere: UTF-8 rule
        ("", "8859/1", "utf-8", None),  # UTF-8 bytes of Ü are valid 8859/1 bytes too
        ("UNICODE UTF-8", "8859/1", "latin-1", Reason.MALFORMED_HL7),  # MSH-18 wins
        ("8859/1", "UNICODE UTF-8", "latin-1", None),  # MSH-18 wins
    ],
)
def test_request_charset_applies_only_when_msh18_is_empty(
    registry: Registry, msh18: str, default: str | None, encoding: str, reason: Reason | None
) -> None:
    """Non-ASCII in MSH (MSH-3) and in the body: both are decoded per the same rule."""
    head = message("trustalias{trustalias}").split(b"\r", 1)[0]
    head = head.replace(b"|SENDAPP|", "|SYST\u00c8ME|".encode(encoding), 1)
    msh18_field = b"||||||" + msh18.encode() if msh18 else b""
    msg = head + msh18_field + b"\r" + "PID|1||X||M\u00dcLLER\r".encode(encoding)
    decision = decide(registry, "mailco", P, msg, default)
    if reason is None:
        assert isinstance(decision, Accepted)
        assert decision.header.sending_application == "SYST\u00c8ME".encode(encoding).decode(
            codec_for(msh18 or default) or "utf-8")
        assert decision.header.character_set == (msh18 or None)  # MSH-18 only, as received
    else:
        assert isinstance(decision, Rejected) and decision.reason is reason
