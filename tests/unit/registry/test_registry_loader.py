"""Registry YAML validation (SPEC 3): strict, and every error names entry and field."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import RegistryInvalid
from processor.registry.loader import (
    DEMO_REGISTRY_PATH,
    load_registry,
    parse_registry,
)
from processor.registry.model import PrincipalType

Doc = dict[str, Any]


def errors_of(data: bytes) -> tuple[str, ...]:
    with pytest.raises(RegistryInvalid) as info:
        parse_registry(data)
    return info.value.errors


def test_valid_document_loads_with_lookups(document: Doc, to_bytes: Callable[[Doc], bytes]) -> None:
    data = to_bytes(document)
    reg = parse_registry(data)
    assert reg.version == hashlib.sha256(data).hexdigest()[:12]
    trust = reg.customer_by_alias("trustalias")
    assert trust is not None and trust.id == "trust-1" and trust.login is not None
    assert trust.login.allowed_networks == (IPv4Network("203.0.113.0/24"),)
    assert reg.customer_by_id("gp-1").authorised_connectors == frozenset({"trust-1"})  # type: ignore[union-attr]
    assert reg.customer_by_alias("TRUSTALIAS") is None  # case-sensitive
    mailco = reg.principal("mailco")
    assert mailco is not None and mailco.type is PrincipalType.PARTNER
    assert mailco.authorised_by == frozenset({"trust-1"})
    assert reg.principal("mailco", PrincipalType.CUSTOMER) is None
    assert reg.principal("trust-1", "customer") is not None
    assert reg.principal_by_username("trust_user").id == "trust-1"  # type: ignore[union-attr]
    assert reg.principal_by_username("partner_mailco").id == "mailco"  # type: ignore[union-attr]
    gp = reg.principal("gp-1")
    assert gp is not None and gp.username is None and gp.password_hash is None


def test_defaults(to_bytes: Callable[[Doc], bytes], hash_of: Callable[[str], str]) -> None:
    doc = {
        "customers": [{"id": "c1", "alias": "a1"}],
        "partners": [{"id": "p1", "username": "u", "password_hash": hash_of("x")}],
    }
    reg = parse_registry(to_bytes(doc))
    c = reg.customer_by_id("c1")
    assert c is not None and c.active and c.authorised_connectors == frozenset() and c.login is None
    p = reg.partner_by_id("p1")
    assert p is not None and p.active and p.allowed_networks == () and p.authorised_by == frozenset()


def test_empty_lists_are_a_valid_registry() -> None:
    reg = parse_registry(b"customers: []\npartners: []\n")
    assert reg.customers == () and reg.partners == ()


def test_version_is_of_the_bytes(document: Doc, to_bytes: Callable[[Doc], bytes]) -> None:
    data = to_bytes(document)
    assert parse_registry(data).version != parse_registry(data + b"# comment\n").version


def test_hashes_never_appear_in_repr(document: Doc, to_bytes: Callable[[Doc], bytes]) -> None:
    reg = parse_registry(to_bytes(document))
    text = repr(reg) + repr(reg.partners) + repr(reg.customers) + repr(reg.principal("mailco"))
    assert "$argon2id$" not in text


def test_networks_normalised(to_bytes: Callable[[Doc], bytes], document: Doc) -> None:
    document["partners"][0]["allowed_networks"] = ["::ffff:192.0.2.0/120", "2001:db8::/32", "198.51.100.7"]
    reg = parse_registry(to_bytes(document))
    assert reg.partner_by_id("mailco").allowed_networks == (  # type: ignore[union-attr]
        IPv4Network("192.0.2.0/24"),
        IPv6Network("2001:db8::/32"),
        IPv4Network("198.51.100.7/32"),
    )


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    """Mutator: ``customers.0.login.username`` style path; value ``...`` deletes."""

    def apply(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is ...:
            del node[key]
        else:
            node[key] = value

    return apply


INVALID: list[tuple[str, Callable[[Doc], None], str]] = [
    ("alias-chars", _set("customers.1.alias", "gp alias"), "customers[1] (id=gp-1).alias: must match"),
    ("alias-brace", _set("customers.1.alias", "gp{x}"), "customers[1] (id=gp-1).alias"),
    ("alias-non-ascii", _set("customers.1.alias", "gpälias"), "customers[1] (id=gp-1).alias"),
    ("alias-empty", _set("customers.1.alias", ""), "customers[1] (id=gp-1).alias"),
    ("alias-missing", _set("customers.1.alias", ...), "customers[1] (id=gp-1).alias: required"),
    ("alias-int", _set("customers.1.alias", 5), "customers[1] (id=gp-1).alias: expected a string, got int"),
    ("dup-alias", _set("customers.1.alias", "trustalias"), "customers[1] (id=gp-1).alias: duplicate alias 'trustalias'"),
    ("dup-customer-id", _set("customers.1.id", "trust-1"), "customers[1] (id=trust-1).id: duplicate id 'trust-1'"),
    ("dup-id-across-kinds", _set("partners.0.id", "gp-1"), "partners[0] (id=gp-1).id: duplicate id 'gp-1'"),
    ("dup-username-partner-vs-login", _set("partners.0.username", "trust_user"), "partners[0] (id=mailco).username: duplicate username"),
    ("id-bad-chars", _set("customers.1.id", "gp|1"), "customers[1] (id='gp|1').id: must match"),
    ("id-missing", _set("customers.1.id", ...), "customers[1].id: required"),
    ("unknown-customer-key", _set("customers.0.colour", "red"), "customers[0] (id=trust-1).colour: unknown key"),
    ("unknown-login-key", _set("customers.0.login.password", "x"), "customers[0] (id=trust-1).login.password: unknown key"),
    ("unknown-partner-key", _set("partners.0.authorized_by", []), "partners[0] (id=mailco).authorized_by: unknown key"),
    ("unknown-top-key", _set("gateways", []), "registry.gateways: unknown key"),
    ("active-string", _set("customers.0.active", "yes please"), "customers[0] (id=trust-1).active: expected true or false, got str"),
    ("active-int", _set("partners.0.active", 1), "partners[0] (id=mailco).active: expected true or false, got int"),
    ("connectors-unknown", _set("customers.1.authorised_connectors", ["trust-9"]), "customers[1] (id=gp-1).authorised_connectors[0]: unknown customer id 'trust-9'"),
    ("connectors-partner", _set("customers.1.authorised_connectors", ["mailco"]), "customers[1] (id=gp-1).authorised_connectors[0]: 'mailco' is a partner"),
    ("connectors-string", _set("customers.1.authorised_connectors", "trust-1"), "customers[1] (id=gp-1).authorised_connectors: expected a list"),
    ("connectors-dup", _set("customers.1.authorised_connectors", ["trust-1", "trust-1"]), "authorised_connectors[1]: 'trust-1' listed twice"),
    ("authorised-by-unknown", _set("partners.0.authorised_by", ["trust-1", "nope"]), "partners[0] (id=mailco).authorised_by[1]: unknown customer id 'nope'"),
    ("authorised-by-int", _set("partners.0.authorised_by", [3]), "partners[0] (id=mailco).authorised_by[0]: expected an id string"),
    ("cidr-garbage", _set("partners.0.allowed_networks", ["10.0.0.0/33"]), "partners[0] (id=mailco).allowed_networks[0]: not a CIDR network"),
    ("cidr-host-bits", _set("customers.0.login.allowed_networks", ["203.0.113.5/24"]), "customers[0] (id=trust-1).login.allowed_networks[0]: not a CIDR network"),
    ("cidr-not-list", _set("partners.0.allowed_networks", "10.0.0.0/8"), "partners[0] (id=mailco).allowed_networks: expected a list"),
    ("hash-argon2i", _set("partners.0.password_hash", "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"), "partners[0] (id=mailco).password_hash: must match an argon2id PHC string"),
    ("hash-bcrypt", _set("partners.0.password_hash", "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"), "partners[0] (id=mailco).password_hash"),
    ("hash-plaintext", _set("customers.0.login.password_hash", "testing"), "customers[0] (id=trust-1).login.password_hash"),
    ("hash-cost-too-high", _set("partners.0.password_hash", "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
     "partners[0] (id=mailco).password_hash: argon2id cost m=4194304,t=2,p=1 is above the ceiling"),
    ("hash-missing", _set("partners.0.password_hash", ...), "partners[0] (id=mailco).password_hash: required"),
    ("username-colon", _set("partners.0.username", "a:b"), "partners[0] (id=mailco).username: must not contain ':'"),
    ("username-empty", _set("partners.0.username", ""), "partners[0] (id=mailco).username: must be 1-256"),
    ("username-missing", _set("customers.0.login.username", ...), "customers[0] (id=trust-1).login.username: required"),
    ("login-not-mapping", _set("customers.0.login", "trust_user"), "customers[0] (id=trust-1).login: expected a mapping"),
    ("entry-not-mapping", _set("customers.1", "gp-1"), "customers[1]: expected a mapping, got str"),
    ("customers-missing", _set("customers", ...), "customers: required"),
    ("partners-missing", _set("partners", ...), "partners: required"),
    ("partners-null", _set("partners", None), "partners: expected a list, got null"),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_documents_are_refused_naming_entry_and_field(
    document: Doc, to_bytes: Callable[[Doc], bytes], mutate: Callable[[Doc], None], expected: str
) -> None:
    mutate(document)
    secrets = [p.get("password_hash") for p in document.get("partners") or [] if isinstance(p, dict)]
    secrets += [
        c["login"].get("password_hash")
        for c in document.get("customers") or []
        if isinstance(c, dict) and isinstance(c.get("login"), dict)
    ]
    errors = errors_of(to_bytes(document))
    assert any(expected in e for e in errors), errors
    for e in errors:  # password hashes (or whatever sits in that field) are never echoed
        assert not any(isinstance(s, str) and s in e for s in secrets), e


def test_all_errors_reported_at_once(document: Doc, to_bytes: Callable[[Doc], bytes]) -> None:
    document["customers"][0]["alias"] = "bad alias"
    document["partners"][0]["authorised_by"] = ["ghost"]
    document["customers"][1]["active"] = "no"
    errors = errors_of(to_bytes(document))
    assert len(errors) == 3
    text = str(RegistryInvalid(list(errors)))
    assert "ghost" in text and text.startswith("invalid registry: ") and "\n" not in text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "registry: expected a mapping, got null"),
        (b"- a\n- b\n", "registry: expected a mapping, got list"),
        (b"customers: [\n", "not valid YAML at line"),
        (b"customers: []\npartners: []\ncustomers: []\n", "duplicate key 'customers'"),
        (b"customers:\n  - id: a\n    alias: x\n    alias: y\npartners: []\n", "duplicate key 'alias'"),
        (b"customers: !!python/object/apply:os.system ['true']\npartners: []\n", "not valid YAML"),
        (b"\xff\xfe\xfa", "registry: not"),
    ],
    ids=["empty", "list", "truncated", "dup-top-key", "dup-entry-key", "python-tag", "binary"],
)
def test_unparseable_files(data: bytes, expected: str) -> None:
    errors = errors_of(data)
    assert any(expected in e for e in errors), errors


def test_truncated_valid_file_is_refused(document: Doc, to_bytes: Callable[[Doc], bytes]) -> None:
    """A prefix cut before the partners section is refused (both top-level keys are required)."""
    data = to_bytes(document)
    cut = data[: data.index(b"partners:")]
    assert errors_of(cut)


def test_load_registry_reads_files(tmp_path: Path, document: Doc, to_bytes: Callable[[Doc], bytes]) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(to_bytes(document))
    assert load_registry(path).version == parse_registry(path.read_bytes()).version
    with pytest.raises(RegistryInvalid, match="unreadable"):
        load_registry(tmp_path / "missing.yaml")


def test_demo_registry_is_valid_with_the_seed_partner_and_delegation() -> None:
    reg = load_registry(DEMO_REGISTRY_PATH)
    mailco = reg.principal_by_username("partner_mailco")
    assert mailco is not None and mailco.id == "mailco" and mailco.type is PrincipalType.PARTNER
    trust = reg.customer_by_alias("trustalias")
    gp = reg.customer_by_alias("gpalias")
    assert trust is not None and trust.id == "trust-1" and trust.id in mailco.authorised_by
    assert gp is not None and gp.id == "gp-1" and "trust-1" in gp.authorised_connectors


ALIAS_CHARS = "abcXYZ019._-"


@settings(max_examples=200, deadline=None)
@given(alias=st.text(min_size=0, max_size=20))
def test_alias_syntax_property(alias: str) -> None:
    doc = {"customers": [{"id": "c1", "alias": alias}], "partners": []}
    data = yaml.safe_dump(doc).encode()
    valid = bool(alias) and all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in alias)
    if valid:
        assert parse_registry(data).customer_by_alias(alias) is not None
    else:
        errs = errors_of(data)
        assert any(e.startswith("customers[0] (id=c1).alias") for e in errs)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_registry_invalid(data: bytes) -> None:
    try:
        parse_registry(data)
    except RegistryInvalid:
        pass


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(ALIAS_CHARS + " :{}$", max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["id", "alias", "active", "login", "username", "password_hash",
                 "allowed_networks", "authorised_by", "authorised_connectors", "x"]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(customers=_values, partners=_values)
def test_arbitrary_structures_only_ever_raise_registry_invalid(customers: Any, partners: Any) -> None:
    data = yaml.safe_dump({"customers": customers, "partners": partners}).encode()
    try:
        reg = parse_registry(data)
    except RegistryInvalid as exc:
        assert exc.errors
    else:
        assert all(reg.customer_by_id(c.id) is c for c in reg.customers)
