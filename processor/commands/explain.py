"""``hl7-processor explain``: the decision for one message, as one JSON object.

Same code path as the edge and the processor (:func:`processor.decision.decide`),
so an operator can ask "why was this dead-lettered?" against a registry file.
Exit 0 for accept and reject alike; exit 2 when the input is unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from processor.decision import Accepted, Decision, decide
from processor.errors import RegistryInvalid
from processor.hl7.charset import charset_from_http
from processor.registry.loader import load_registry
from processor.registry.model import PrincipalType

__all__ = ["main", "explain_json"]


def explain_json(decision: Decision) -> dict[str, str | None]:
    """The SPEC 7 JSON shape; ``null`` where a value is unknown."""
    if isinstance(decision, Accepted):
        return {
            "decision": "accept",
            "reason": None,
            "connecting_customer_id": decision.connecting_customer_id,
            "data_controller_id": decision.data_controller_id,
            "message_control_id": decision.header.message_control_id,
            "registry_version": decision.registry_version,
        }
    header = decision.header
    return {
        "decision": "reject",
        "reason": decision.reason.value,
        "connecting_customer_id": decision.connecting_customer_id,
        "data_controller_id": decision.data_controller_id,
        "message_control_id": header.message_control_id if header is not None else None,
        "registry_version": decision.registry_version,
    }


def _read_message(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    return Path(source).read_bytes()


def main(args: argparse.Namespace) -> int:
    try:
        registry = load_registry(args.registry)
    except RegistryInvalid as exc:
        print(f"hl7-processor explain: {exc}", file=sys.stderr)
        return 2
    try:
        payload = _read_message(args.message)
    except OSError as exc:
        print(
            f"hl7-processor explain: cannot read message {args.message!r}: "
            f"{exc.strerror or type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    principal = registry.principal(args.principal)
    ptype = principal.type if principal is not None else PrincipalType.PARTNER
    default_charset = None
    if getattr(args, "charset", None):
        default_charset = charset_from_http(args.charset)
        if default_charset is None:
            print(f"hl7-processor explain: unsupported charset {args.charset!r}", file=sys.stderr)
            return 2
    decision = decide(registry, args.principal, ptype, payload, default_charset)
    print(json.dumps(explain_json(decision)))
    return 0
