"""The registry as immutable values: who exists, who may send for whom.

Pure data plus look-up indexes; no I/O. ``loader`` builds a :class:`Registry`
from YAML after validating it, so code holding a ``Registry`` may assume every
cross-reference resolves and every id, alias and username is unique.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from types import MappingProxyType
from typing import TypeVar

__all__ = [
    "Network",
    "PrincipalType",
    "Login",
    "Customer",
    "Partner",
    "Principal",
    "Registry",
    "normalise_fingerprint",
]

Network = IPv4Network | IPv6Network

_HEX = frozenset("0123456789abcdef")


def normalise_fingerprint(text: str) -> str | None:
    """A SHA-256 certificate fingerprint as 64 lower-case hex digits, or ``None`` if ``text``
    is not one (hex digits, colons optional: ``AB:CD:...`` as ``openssl x509 -fingerprint``
    prints it, or ``abcd...``)."""
    digits = text.replace(":", "").lower()
    if len(digits) != 64 or not _HEX.issuperset(digits):
        return None
    return digits


class PrincipalType(StrEnum):
    """Kind of authenticated sender; values are the ``hl7.principal_type`` header values."""

    PARTNER = "partner"
    CUSTOMER = "customer"


@dataclass(frozen=True, slots=True)
class Login:
    """A customer's own HL7 API login."""

    username: str
    password_hash: str = field(repr=False)
    allowed_networks: tuple[Network, ...] = ()
    client_certificates: frozenset[str] = frozenset()  # normalised SHA-256 fingerprints (MLLP)


@dataclass(frozen=True, slots=True)
class Customer:
    """An organisation holding PKB data; ``alias`` is what MSH-4 names it by."""

    id: str
    alias: str
    active: bool = True
    authorised_connectors: frozenset[str] = frozenset()
    login: Login | None = None


@dataclass(frozen=True, slots=True)
class Partner:
    """A third party sending on behalf of the customers in ``authorised_by``."""

    id: str
    active: bool
    username: str
    password_hash: str = field(repr=False)
    allowed_networks: tuple[Network, ...] = ()
    authorised_by: frozenset[str] = frozenset()
    client_certificates: frozenset[str] = frozenset()  # normalised SHA-256 fingerprints (MLLP)


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever may appear as ``hl7.principal_id``: one view over partners and customers.

    A customer without a login is still a principal (an upstream gateway may send on
    its behalf), but ``username`` and ``password_hash`` are then ``None`` and it can
    never authenticate at the edge.
    """

    id: str
    type: PrincipalType
    active: bool
    username: str | None
    password_hash: str | None = field(repr=False)
    allowed_networks: tuple[Network, ...]
    alias: str | None  # the customer's own alias; None for partners
    authorised_by: frozenset[str] = frozenset()  # partners only
    client_certificates: frozenset[str] = frozenset()  # identify it on MLLP (SPEC 4a)


def _partner_principal(p: Partner) -> Principal:
    return Principal(
        id=p.id,
        type=PrincipalType.PARTNER,
        active=p.active,
        username=p.username,
        password_hash=p.password_hash,
        allowed_networks=p.allowed_networks,
        alias=None,
        authorised_by=p.authorised_by,
        client_certificates=p.client_certificates,
    )


def _customer_principal(c: Customer) -> Principal:
    login = c.login
    return Principal(
        id=c.id,
        type=PrincipalType.CUSTOMER,
        active=c.active,
        username=login.username if login else None,
        password_hash=login.password_hash if login else None,
        allowed_networks=login.allowed_networks if login else (),
        alias=c.alias,
        client_certificates=login.client_certificates if login else frozenset(),
    )


class Registry:
    """One validated registry version with O(1) look-ups.

    Build it through ``processor.registry.loader``; the constructor only checks
    uniqueness (so indexes are well defined), not cross-references.
    """

    __slots__ = (
        "version",
        "customers",
        "partners",
        "_customers_by_id",
        "_customers_by_alias",
        "_partners_by_id",
        "_principals",
        "_by_username",
        "_by_certificate",
    )

    def __init__(self, version: str, customers: Iterable[Customer], partners: Iterable[Partner]) -> None:
        self.version: str = version
        self.customers: tuple[Customer, ...] = tuple(customers)
        self.partners: tuple[Partner, ...] = tuple(partners)
        self._customers_by_id: Mapping[str, Customer] = _unique((c.id, c) for c in self.customers)
        self._customers_by_alias: Mapping[str, Customer] = _unique((c.alias, c) for c in self.customers)
        self._partners_by_id: Mapping[str, Partner] = _unique((p.id, p) for p in self.partners)
        principals = [_customer_principal(c) for c in self.customers]
        principals += [_partner_principal(p) for p in self.partners]
        self._principals: Mapping[str, Principal] = _unique((p.id, p) for p in principals)
        self._by_username: Mapping[str, Principal] = _unique(
            (p.username, p) for p in principals if p.username is not None
        )
        self._by_certificate: Mapping[str, Principal] = _unique(
            (fp, p) for p in principals for fp in sorted(p.client_certificates)
        )

    def customer_by_id(self, customer_id: str) -> Customer | None:
        return self._customers_by_id.get(customer_id)

    def customer_by_alias(self, alias: str) -> Customer | None:
        """Aliases are case-sensitive (SPEC 3)."""
        return self._customers_by_alias.get(alias)

    def partner_by_id(self, partner_id: str) -> Partner | None:
        return self._partners_by_id.get(partner_id)

    def principal(
        self, principal_id: str, principal_type: PrincipalType | str | None = None
    ) -> Principal | None:
        """The principal with this id; with ``principal_type`` given it must match too."""
        found = self._principals.get(principal_id)
        if found is None or principal_type is None:
            return found
        return found if found.type.value == str(principal_type) else None

    def principal_by_username(self, username: str) -> Principal | None:
        return self._by_username.get(username)

    def principal_by_certificate(self, fingerprint: str) -> Principal | None:
        """The principal whose ``client_certificates`` lists this SHA-256 fingerprint
        (normalised: 64 lower-case hex digits, see :func:`normalise_fingerprint`)."""
        return self._by_certificate.get(fingerprint)

    def __repr__(self) -> str:  # no hashes in reprs or logs
        return (
            f"Registry(version={self.version!r}, customers={len(self.customers)}, "
            f"partners={len(self.partners)})"
        )


_V = TypeVar("_V")


def _unique(pairs: Iterable[tuple[str, _V]]) -> Mapping[str, _V]:
    out: dict[str, _V] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate registry key {key!r}")
        out[key] = value
    return MappingProxyType(out)
