"""Shared helpers for edge tests: a test registry with cheap argon2 hashes, Basic headers."""

from __future__ import annotations

from base64 import b64encode
from pathlib import Path

from argon2 import Type
from argon2.profiles import Parameters

from processor.registry.credentials import hash_password

__all__ = ["CHEAP", "PASSWORD", "registry_yaml", "write_registry", "basic", "SEED_USER", "SEED_PASSWORD"]

# Cheap argon2id for tests only (the production floor costs ~35 ms per cold check).
CHEAP = Parameters(type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=64, parallelism=1)

SEED_USER = "partner_mailco"
SEED_PASSWORD = "testing"
PASSWORD = "s3cret-pw"

_HASHES: dict[str, str] = {}


def _hash(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = hash_password(password, parameters=CHEAP)
    return _HASHES[password]


def registry_yaml() -> str:
    """Customers trust-1 (trustalias), trust-2 (otheralias, delegates to trust-1), trust-3
    (thirdalias, no grants), trust-off (inactive); partner mailco (seed) authorised by
    trust-1 and trust-3; an inactive partner; a partner limited to TEST-NET-3; a customer
    login for trust-1."""
    return f"""
customers:
  - id: trust-1
    alias: trustalias
    login:
      username: trust_user
      password_hash: "{_hash(PASSWORD)}"
  - id: trust-2
    alias: otheralias
    authorised_connectors: [trust-1]
  - id: trust-3
    alias: thirdalias
  - id: trust-off
    alias: offalias
    active: false
partners:
  - id: mailco
    username: {SEED_USER}
    password_hash: "{_hash(SEED_PASSWORD)}"
    authorised_by: [trust-1, trust-off]
  - id: oldco
    active: false
    username: partner_old
    password_hash: "{_hash(PASSWORD)}"
    authorised_by: [trust-1]
  - id: netco
    username: partner_net
    password_hash: "{_hash(PASSWORD)}"
    allowed_networks: ["203.0.113.0/24"]
    authorised_by: [trust-1]
"""


def write_registry(directory: Path) -> Path:
    path = directory / "registry.yaml"
    path.write_text(registry_yaml())
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()
