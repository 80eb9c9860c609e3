"""Registry YAML -> validated :class:`Registry` (SPEC section 3).

Validation is strict because a registry mistake silently misroutes patient data:
unknown keys, wrong types, duplicate ids/aliases/usernames, dangling references,
bad CIDRs and hashes that are not argon2id PHC strings are all refused, and each
error names the entry and field, e.g. ``customers[2] (id=trust-9).alias: ...``.
Every error found is reported at once (``RegistryInvalid.errors``).

Parsing uses PyYAML's ``SafeLoader`` (what ``yaml.safe_load`` uses), subclassed
only to refuse duplicate mapping keys, which plain ``safe_load`` silently merges.
Password hashes are never echoed in errors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import yaml

from processor.errors import RegistryInvalid
from processor.registry.model import Customer, Login, Network, Partner, Registry, normalise_fingerprint

__all__ = [
    "ALIAS_RE",
    "ID_RE",
    "DEMO_REGISTRY_PATH",
    "registry_version",
    "parse_registry",
    "load_registry",
    "normalise_network",
]

ALIAS_RE = re.compile(r"[A-Za-z0-9._-]+")
"""Alias syntax (SPEC 3); use with ``fullmatch``."""
ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""Ids are Kafka-key parts (``id|MSH-4``) and metric labels: same safe alphabet as aliases."""
_ARGON2ID_PHC = re.compile(
    r"\$argon2id\$v=19\$m=([1-9][0-9]{0,9}),t=([1-9][0-9]{0,9}),p=([1-9][0-9]{0,3})"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}"
)
# Ceiling on the cost a hash may ask for: every cold login runs it on the edge's small
# worker pool, so one entry with m=4 GiB would exhaust the host (a registry typo, or worse).
_ARGON2_MAX_MEMORY_KIB = 1024 * 1024  # 1 GiB; OWASP's minimum is 19 MiB
_ARGON2_MAX_TIME_COST = 64
_ARGON2_MAX_PARALLELISM = 64
_KEY_RE = re.compile(r"[A-Za-z0-9_]{1,40}")
_MAX_USERNAME = 256
_MAX_FILE_BYTES = 16 * 1024 * 1024

DEMO_REGISTRY_PATH = Path(__file__).resolve().parent.parent / "demo_registry.yaml"
"""The demo registry used by ``hl7-processor run`` when none is configured."""

_TOP_KEYS = {"customers", "partners"}
_CUSTOMER_KEYS = {"id", "alias", "active", "authorised_connectors", "login"}
_LOGIN_KEYS = {"username", "password_hash", "allowed_networks", "client_certificates"}
_PARTNER_KEYS = {
    "id",
    "active",
    "username",
    "password_hash",
    "allowed_networks",
    "authorised_by",
    "client_certificates",
}
_MAX_CERTIFICATES = 100


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {str(key)[:64]!r}", key_node.start_mark
            )
        if isinstance(key, Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def registry_version(data: bytes) -> str:
    """First 12 hex digits of SHA-256 of the file bytes (SPEC 3)."""
    return hashlib.sha256(data).hexdigest()[:12]


def normalise_network(net: Network) -> Network:
    """IPv4-mapped IPv6 networks (``::ffff:a.b.c.d/120``) become plain IPv4 networks."""
    if isinstance(net, IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network(f"{mapped}/{net.prefixlen - 96}")
    return net


class _Checker:
    """Collects errors while converting plain YAML data into model objects."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    # --- scalar helpers -------------------------------------------------------
    def mapping(self, value: object, where: str, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(where, f"expected a mapping, got {_type_name(value)}")
            return None
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                self.error(
                    f"{where}.{key if isinstance(key, str) and _KEY_RE.fullmatch(key) else _show(key, 40)}",
                    f"unknown key (allowed: {', '.join(sorted(allowed))})",
                )
        return value

    def string(
        self,
        entry: dict[str, Any],
        key: str,
        where: str,
        *,
        required: bool,
        pattern: re.Pattern[str] | None = None,
        pattern_text: str = "",
        secret: bool = False,
    ) -> str | None:
        if key not in entry:
            if required:
                self.error(f"{where}.{key}", "required")
            return None
        value = entry[key]
        if not isinstance(value, str):
            self.error(f"{where}.{key}", f"expected a string, got {_type_name(value)}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            shown = "" if secret else f" {_show(value)}"
            self.error(f"{where}.{key}", f"must match {pattern_text}, got{shown or ' (hidden)'}")
            return None
        return value

    def boolean(self, entry: dict[str, Any], key: str, where: str, default: bool) -> bool:
        if key not in entry:
            return default
        value = entry[key]
        if not isinstance(value, bool):
            self.error(f"{where}.{key}", f"expected true or false, got {_type_name(value)}")
            return default
        return value

    def id_list(self, entry: dict[str, Any], key: str, where: str) -> list[str]:
        if key not in entry or entry[key] is None:
            return []
        value = entry[key]
        if not isinstance(value, list):
            self.error(f"{where}.{key}", f"expected a list of ids, got {_type_name(value)}")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.error(f"{where}.{key}[{i}]", f"expected an id string, got {_type_name(item)}")
            elif item in out:
                self.error(f"{where}.{key}[{i}]", f"{_show(item)} listed twice")
            else:
                out.append(item)
        return out

    def networks(self, entry: dict[str, Any], key: str, where: str) -> tuple[Network, ...]:
        if key not in entry or entry[key] is None:
            return ()
        value = entry[key]
        if not isinstance(value, list):
            self.error(f"{where}.{key}", f"expected a list of CIDR strings, got {_type_name(value)}")
            return ()
        out: list[Network] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.error(f"{where}.{key}[{i}]", f"expected a CIDR string, got {_type_name(item)}")
                continue
            try:
                out.append(normalise_network(ip_network(item, strict=True)))
            except ValueError as exc:
                self.error(f"{where}.{key}[{i}]", f"not a CIDR network {_show(item)} ({exc})")
        return tuple(out)

    def fingerprints(self, entry: dict[str, Any], where: str) -> frozenset[str]:
        """``client_certificates``: SHA-256 fingerprints (hex, colons optional), normalised."""
        key = "client_certificates"
        if key not in entry or entry[key] is None:
            return frozenset()
        value = entry[key]
        if not isinstance(value, list):
            self.error(f"{where}.{key}", f"expected a list of SHA-256 fingerprints, got {_type_name(value)}")
            return frozenset()
        if len(value) > _MAX_CERTIFICATES:
            self.error(f"{where}.{key}", f"more than {_MAX_CERTIFICATES} certificates")
            return frozenset()
        out: list[str] = []
        for i, item in enumerate(value):
            fingerprint = normalise_fingerprint(item) if isinstance(item, str) else None
            if fingerprint is None:
                self.error(
                    f"{where}.{key}[{i}]",
                    f"expected a SHA-256 fingerprint (64 hex digits, colons optional), got {_show(item)}",
                )
            elif fingerprint in out:
                self.error(f"{where}.{key}[{i}]", "fingerprint listed twice")
            else:
                out.append(fingerprint)
        return frozenset(out)

    def username(self, entry: dict[str, Any], where: str) -> str | None:
        value = self.string(entry, "username", where, required=True)
        if value is None:
            return None
        if not value or len(value) > _MAX_USERNAME:
            self.error(f"{where}.username", f"must be 1-{_MAX_USERNAME} characters")
            return None
        if ":" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            self.error(f"{where}.username", "must not contain ':' or control characters")
            return None
        return value

    def password_hash(self, entry: dict[str, Any], where: str) -> str | None:
        value = self.string(
            entry,
            "password_hash",
            where,
            required=True,
            pattern=_ARGON2ID_PHC,
            pattern_text="an argon2id PHC string ($argon2id$v=19$m=..,t=..,p=..$salt$hash)",
            secret=True,
        )
        match = _ARGON2ID_PHC.fullmatch(value) if value else None
        if match is not None:
            memory, time_cost, lanes = (int(g) for g in match.groups())
            if (
                memory > _ARGON2_MAX_MEMORY_KIB
                or time_cost > _ARGON2_MAX_TIME_COST
                or lanes > _ARGON2_MAX_PARALLELISM
            ):
                self.error(
                    f"{where}.password_hash",
                    f"argon2id cost m={memory},t={time_cost},p={lanes} is above the ceiling "
                    f"(m<={_ARGON2_MAX_MEMORY_KIB} KiB, t<={_ARGON2_MAX_TIME_COST}, "
                    f"p<={_ARGON2_MAX_PARALLELISM}): every login would run it",
                )
                return None
        return value


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: object, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _label(kind: str, index: int, entry: object) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
        cid = entry["id"]
        return f"{kind}[{index}] (id={cid if ID_RE.fullmatch(cid) else _show(cid, 40)})"
    return f"{kind}[{index}]"


def _entries(chk: _Checker, top: dict[str, Any], kind: str) -> list[object]:
    if kind not in top:
        chk.error(kind, "required (use [] for none)")
        return []
    value = top[kind]
    if not isinstance(value, list):
        chk.error(kind, f"expected a list, got {_type_name(value)}")
        return []
    return value


def _customer(chk: _Checker, raw: object, where: str) -> tuple[Customer | None, list[str]]:
    entry = chk.mapping(raw, where, _CUSTOMER_KEYS)
    if entry is None:
        return None, []
    before = len(chk.errors)
    cid = chk.string(entry, "id", where, required=True, pattern=ID_RE, pattern_text="[A-Za-z0-9._-]{1,128}")
    alias = chk.string(entry, "alias", where, required=True, pattern=ALIAS_RE, pattern_text="[A-Za-z0-9._-]+")
    active = chk.boolean(entry, "active", where, True)
    connectors = chk.id_list(entry, "authorised_connectors", where)
    login: Login | None = None
    raw_login = entry.get("login")
    if raw_login is not None:
        lwhere = f"{where}.login"
        lentry = chk.mapping(raw_login, lwhere, _LOGIN_KEYS)
        if lentry is not None:
            username = chk.username(lentry, lwhere)
            phash = chk.password_hash(lentry, lwhere)
            nets = chk.networks(lentry, "allowed_networks", lwhere)
            certs = chk.fingerprints(lentry, lwhere)
            if username is not None and phash is not None:
                login = Login(
                    username=username, password_hash=phash, allowed_networks=nets, client_certificates=certs
                )
    if len(chk.errors) != before or cid is None or alias is None:
        return None, connectors
    return (
        Customer(
            id=cid,
            alias=alias,
            active=active,
            authorised_connectors=frozenset(connectors),
            login=login,
        ),
        connectors,
    )


def _partner(chk: _Checker, raw: object, where: str) -> tuple[Partner | None, list[str]]:
    entry = chk.mapping(raw, where, _PARTNER_KEYS)
    if entry is None:
        return None, []
    before = len(chk.errors)
    pid = chk.string(entry, "id", where, required=True, pattern=ID_RE, pattern_text="[A-Za-z0-9._-]{1,128}")
    active = chk.boolean(entry, "active", where, True)
    username = chk.username(entry, where)
    phash = chk.password_hash(entry, where)
    nets = chk.networks(entry, "allowed_networks", where)
    granted = chk.id_list(entry, "authorised_by", where)
    certs = chk.fingerprints(entry, where)
    if len(chk.errors) != before or pid is None or username is None or phash is None:
        return None, granted
    return (
        Partner(
            id=pid,
            username=username,
            password_hash=phash,
            active=active,
            allowed_networks=nets,
            authorised_by=frozenset(granted),
            client_certificates=certs,
        ),
        granted,
    )


def _check_unique(chk: _Checker, items: list[tuple[str, str, str]], what: str) -> None:
    """``items`` are (value, where, field); report every repeat with the first owner."""
    first: dict[str, str] = {}
    for value, where, field in items:
        if value in first:
            chk.error(f"{where}.{field}", f"duplicate {what} {_show(value)} (already used by {first[value]})")
        else:
            first[value] = where


def parse_registry(data: bytes) -> Registry:
    """Validate registry YAML bytes; raise :class:`RegistryInvalid` listing every error."""
    if len(data) > _MAX_FILE_BYTES:
        raise RegistryInvalid([f"registry: file larger than {_MAX_FILE_BYTES} bytes"])
    try:
        doc = yaml.load(data, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise RegistryInvalid([f"registry: not valid YAML{where}: {problem}"]) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryInvalid([f"registry: not readable text ({type(exc).__name__})"]) from None

    chk = _Checker()
    top = chk.mapping(doc, "registry", _TOP_KEYS)
    if top is None:
        raise RegistryInvalid(chk.errors)

    customers: list[Customer] = []
    partners: list[Partner] = []
    # (where, referenced ids, field): checked once every id is known
    refs: list[tuple[str, list[str], str]] = []
    ids: list[tuple[str, str, str]] = []
    aliases: list[tuple[str, str, str]] = []
    usernames: list[tuple[str, str, str]] = []
    certificates: list[tuple[str, str, str]] = []

    for i, raw in enumerate(_entries(chk, top, "customers")):
        where = _label("customers", i, raw)
        cust, connectors = _customer(chk, raw, where)
        refs.append((where, connectors, "authorised_connectors"))
        if isinstance(raw, dict):
            _collect(raw, "id", where, ids)
            _collect(raw, "alias", where, aliases)
            login = raw.get("login")
            if isinstance(login, dict):
                _collect(login, "username", f"{where}.login", usernames)
                _collect_fingerprints(login, f"{where}.login", certificates)
        if cust is not None:
            customers.append(cust)
    for i, raw in enumerate(_entries(chk, top, "partners")):
        where = _label("partners", i, raw)
        part, granted = _partner(chk, raw, where)
        refs.append((where, granted, "authorised_by"))
        if isinstance(raw, dict):
            _collect(raw, "id", where, ids)
            _collect(raw, "username", where, usernames)
            _collect_fingerprints(raw, where, certificates)
        if part is not None:
            partners.append(part)

    _check_unique(chk, ids, "id")
    _check_unique(chk, aliases, "alias")
    _check_unique(chk, usernames, "username")
    # One certificate, one principal: else the MLLP identity of a connection would be ambiguous.
    _check_unique(chk, certificates, "client certificate")

    customer_ids = {v for v, w, _ in ids if w.startswith("customers[")}
    partner_ids = {v for v, w, _ in ids if w.startswith("partners[")}
    for where, targets, field in refs:
        for j, target in enumerate(targets):
            if target in customer_ids:
                continue
            if target in partner_ids:
                chk.error(f"{where}.{field}[{j}]", f"{_show(target)} is a partner, not a customer")
            else:
                chk.error(f"{where}.{field}[{j}]", f"unknown customer id {_show(target)}")

    if chk.errors:
        raise RegistryInvalid(chk.errors)
    return Registry(registry_version(data), customers, partners)


def _collect(entry: dict[str, Any], key: str, where: str, into: list[tuple[str, str, str]]) -> None:
    value = entry.get(key)
    if isinstance(value, str):
        into.append((value, where, key))


def _collect_fingerprints(entry: dict[str, Any], where: str, into: list[tuple[str, str, str]]) -> None:
    value = entry.get("client_certificates")
    if isinstance(value, list):
        seen: set[str] = set()  # a repeat within the entry is reported by _Checker.fingerprints
        for i, item in enumerate(value[:_MAX_CERTIFICATES]):
            fingerprint = normalise_fingerprint(item) if isinstance(item, str) else None
            if fingerprint is not None and fingerprint not in seen:
                seen.add(fingerprint)
                into.append((fingerprint, where, f"client_certificates[{i}]"))


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry file; unreadable files raise :class:`RegistryInvalid` too."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RegistryInvalid(
            f"registry file {str(p)!r} unreadable: {exc.strerror or type(exc).__name__}"
        ) from None
    return parse_registry(data)
