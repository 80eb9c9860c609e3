"""``hl7-processor registry hash-password`` and ``registry check FILE``.

``registry check`` reports its verdict itself: exit 0 with a summary, or exit 1 with
every error on its own line (docs/registry.md). ``hash-password`` refuses unusable input
(passwords that differ, an empty one) with an ``InputError``: one line, exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from argon2 import extract_parameters

from processor.errors import InputError, RegistryInvalid
from processor.registry.credentials import PRODUCTION_PARAMETERS
from processor.registry.credentials import hash_password as _hash
from processor.registry.loader import load_registry
from processor.registry.model import Registry

__all__ = ["hash_password", "check", "weak_hashes"]


def _read_password() -> str:
    """Twice with no echo on a terminal; one line from stdin otherwise (scripts, pipes)."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Repeat password: ")
        if first != second:
            raise InputError("registry hash-password: passwords differ")
        return first
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def hash_password(args: argparse.Namespace) -> int:
    password = _read_password()
    if not password:
        raise InputError("registry hash-password: empty password refused")
    print(_hash(password))
    return 0


def weak_hashes(registry: Registry) -> list[str]:
    """Entries whose argon2id cost is below the production parameters (warnings only)."""
    floor = PRODUCTION_PARAMETERS
    out: list[str] = []
    entries = [(f"partners (id={p.id}).password_hash", p.password_hash) for p in registry.partners]
    entries += [
        (f"customers (id={c.id}).login.password_hash", c.login.password_hash)
        for c in registry.customers
        if c.login is not None
    ]
    for where, phc in entries:
        p = extract_parameters(phc)
        if p.memory_cost < floor.memory_cost or p.time_cost < floor.time_cost:
            out.append(
                f"{where}: argon2id m={p.memory_cost},t={p.time_cost},p={p.parallelism} is below "
                f"m={floor.memory_cost},t={floor.time_cost}"
            )
    return out


def check(args: argparse.Namespace) -> int:
    try:
        registry = load_registry(args.file)
    except RegistryInvalid as exc:  # the verdict, not a failure of the command: every error
        print(f"{args.file}: invalid registry ({len(exc.errors)} error(s)):", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    logins = sum(1 for c in registry.customers if c.login is not None)
    inactive = sum(1 for c in registry.customers if not c.active) + sum(
        1 for p in registry.partners if not p.active
    )
    print(
        f"{args.file}: ok, registry_version {registry.version}: "
        f"{len(registry.customers)} customer(s) ({logins} with a login), "
        f"{len(registry.partners)} partner(s), {inactive} inactive"
    )
    for warning in weak_hashes(registry):
        print(f"warning: {warning}", file=sys.stderr)
    return 0
