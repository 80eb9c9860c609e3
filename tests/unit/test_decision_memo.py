"""decide() remembers rows 5-11 per registry object: same answers as a fresh decision."""

from __future__ import annotations

from processor.decision import Accepted, Rejected, decide
from processor.reasons import Reason
from processor.registry.loader import parse_registry
from processor.registry.model import PrincipalType
from tests.builders import PASSWORD_HASH

P = PrincipalType.PARTNER


def _registry(authorised_by: str) -> bytes:
    return (
        "customers:\n  - {id: trust-1, alias: trustalias}\n  - {id: trust-2, alias: otheralias}\n"
        f'partners:\n  - {{id: mailco, username: u, password_hash: "{PASSWORD_HASH}", authorised_by: [{authorised_by}]}}\n'
    ).encode()


def _message(control_id: str, msh4: str = "trustalias{trustalias}") -> bytes:
    return f"MSH|^~\\&|APP|{msh4}|PKB|PKB|20240101||ADT^A01|{control_id}|P|2.5\rPID|1\r".encode()


def test_repeated_decisions_carry_each_message_header_and_equal_fresh_ones() -> None:
    registry = parse_registry(_registry("trust-1"))
    first = decide(registry, "mailco", "partner", _message("C1"))
    second = decide(registry, "mailco", P, _message("C2"))
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert first.header.message_control_id == "C1" and second.header.message_control_id == "C2"
    assert first == Accepted(first.header, "trust-1", "trustalias", "trust-1", "trustalias", registry.version)
    refused = [decide(registry, "mailco", "partner", _message(f"R{i}", "otheralias{otheralias}")) for i in (1, 2)]
    assert all(isinstance(r, Rejected) and r.reason is Reason.PARTNER_NOT_AUTHORISED for r in refused)
    assert [r.header.message_control_id for r in refused if r.header] == ["R1", "R2"]
    assert refused[0].detail == refused[1].detail and refused[1].connecting_customer_id == "trust-2"


def test_a_new_registry_object_is_decided_afresh() -> None:
    allowing = parse_registry(_registry("trust-1"))
    refusing = parse_registry(_registry("trust-2"))
    assert isinstance(decide(allowing, "mailco", "partner", _message("A")), Accepted)
    now = decide(refusing, "mailco", "partner", _message("B"))
    assert isinstance(now, Rejected) and now.reason is Reason.PARTNER_NOT_AUTHORISED
    assert isinstance(decide(allowing, "mailco", "partner", _message("C")), Accepted)
