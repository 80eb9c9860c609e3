"""``hl7-processor explain``: the decision for one message, as one JSON object.

Same code path as the edge and the processor (:func:`processor.decision.decide`),
so an operator can ask "why was this dead-lettered?" against a registry file.
Exit 0 for accept and reject alike; exit 2 when the input is unusable (an
:class:`~processor.errors.InputError` that ``processor.cli`` reports in one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from processor.decision import Accepted, Decision, decide
from processor.errors import InputError
from processor.hl7.charset import charset_from_http
from processor.registry.loader import load_registry
from processor.registry.model import PrincipalType

__all__ = ["main", "explain_json"]


# Decision row 12 (DUPLICATE) needs the processor's dedupe state, which explain cannot see:
# an "accept" here means rows 1-11 pass; the processor may still dead-letter a resend.
DEDUPE_NOT_CHECKED = "not checked"


def explain_json(decision: Decision) -> dict[str, str | None]:
    """The SPEC 7 JSON shape, plus ``"dedupe": "not checked"`` (row 12); ``null`` where a
    value is unknown."""
    if isinstance(decision, Accepted):
        return {
            "decision": "accept",
            "reason": None,
            "connecting_customer_id": decision.connecting_customer_id,
            "data_controller_id": decision.data_controller_id,
            "message_control_id": decision.header.message_control_id,
            "registry_version": decision.registry_version,
            "dedupe": DEDUPE_NOT_CHECKED,
        }
    header = decision.header
    return {
        "decision": "reject",
        "reason": decision.reason.value,
        "connecting_customer_id": decision.connecting_customer_id,
        "data_controller_id": decision.data_controller_id,
        "message_control_id": header.message_control_id if header is not None else None,
        "registry_version": decision.registry_version,
        "dedupe": DEDUPE_NOT_CHECKED,
    }


def _read_message(source: str) -> bytes:
    try:
        if source == "-":
            return sys.stdin.buffer.read()
        return Path(source).read_bytes()
    except OSError as exc:
        raise InputError(
            f"explain: cannot read message {source!r}: {exc.strerror or type(exc).__name__}"
        ) from None


def main(args: argparse.Namespace) -> int:
    registry = load_registry(args.registry)  # RegistryInvalid: exit 2
    payload = _read_message(args.message)
    principal = registry.principal(args.principal)
    ptype = principal.type if principal is not None else PrincipalType.PARTNER
    default_charset = None
    if getattr(args, "charset", None):
        default_charset = charset_from_http(args.charset)
        if default_charset is None:
            raise InputError(f"explain: unsupported charset {args.charset!r}")
    decision = decide(registry, args.principal, ptype, payload, default_charset)
    print(json.dumps(explain_json(decision)))
    return 0
