"""Registry ``client_certificates`` (SPEC 3, 4a): normalised, validated, unique across principals."""

from __future__ import annotations

import pytest

from processor.errors import RegistryInvalid
from processor.registry.loader import parse_registry
from processor.registry.model import normalise_fingerprint
from tests.builders import PASSWORD_HASH

FP_A = "ab" * 32
FP_B = "0123456789abcdef" * 4


def registry(partner: str = "[]", login: str = "[]") -> bytes:
    return f"""
customers:
  - id: trust-1
    alias: trustalias
    login:
      username: trust_user
      password_hash: "{PASSWORD_HASH}"
      client_certificates: {login}
partners:
  - id: mailco
    username: partner_mailco
    password_hash: "{PASSWORD_HASH}"
    authorised_by: [trust-1]
    client_certificates: {partner}
""".encode()


def errors(data: bytes) -> list[str]:
    with pytest.raises(RegistryInvalid) as err:
        parse_registry(data)
    return list(err.value.errors)


@pytest.mark.parametrize("text", [FP_A, FP_A.upper(), ":".join(FP_A[i:i + 2].upper() for i in range(0, 64, 2))])
def test_fingerprint_forms_normalise_alike(text: str) -> None:
    assert normalise_fingerprint(text) == FP_A


@pytest.mark.parametrize("text", ["", "ab" * 31, "ab" * 33, "zz" * 32, "sha256:" + FP_A, FP_A[:-1] + "g"])
def test_not_a_fingerprint(text: str) -> None:
    assert normalise_fingerprint(text) is None


def test_principals_found_by_certificate() -> None:
    reg = parse_registry(registry(partner=f'["{FP_A.upper()}"]', login=f'["{FP_B}"]'))
    partner, customer = reg.principal_by_certificate(FP_A), reg.principal_by_certificate(FP_B)
    assert partner is not None and partner.id == "mailco" and partner.client_certificates == {FP_A}
    assert customer is not None and customer.id == "trust-1"
    assert reg.principal_by_certificate("cd" * 32) is None


def test_one_fingerprint_under_two_principals_is_an_error() -> None:
    [error] = errors(registry(partner=f'["{FP_A}"]', login=f'["{FP_A.upper()}"]'))
    assert error.startswith("partners[0] (id=mailco).client_certificates[0]: duplicate client certificate")
    assert "customers[0] (id=trust-1).login" in error


def test_bad_entries_name_the_entry_and_field() -> None:
    found = errors(registry(partner='["nope", 7]', login=f'"{FP_A}"'))
    assert "partners[0] (id=mailco).client_certificates[0]: expected a SHA-256 fingerprint" in found[1] + found[0] + found[2]
    assert any(e.startswith("customers[0] (id=trust-1).login.client_certificates: expected a list") for e in found)
    assert any(e.startswith("partners[0] (id=mailco).client_certificates[1]") for e in found)


def test_same_fingerprint_twice_in_one_entry() -> None:
    [error] = errors(registry(partner=f'["{FP_A}", "{FP_A.upper()}"]'))
    assert error == "partners[0] (id=mailco).client_certificates[1]: fingerprint listed twice"
