"""``hl7-processor acls``: the least-privilege ACLs of each role; ``--apply`` creates them.

Without ``--apply`` nothing is contacted: the bindings are printed as a table, or as
``kafka-acls.sh`` command lines (``--format kafka-acls``). With ``--apply`` they are
created through ``AdminClient.create_acls`` on the cluster of ``HL7_KAFKA_BOOTSTRAP_SERVERS``
(credentials from ``HL7_KAFKA_*``: a super user, or a principal with ALTER on the
cluster). Creating an ACL that exists already is not an error.

Exit codes: 0 done; 1 Kafka refused or did not answer; 2 unusable configuration
(``processor.cli`` reports both).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from processor.config import Settings, load_settings, require
from processor.errors import CommandFailed
from processor.kafka.acls import (
    Principals,
    RoleAcl,
    format_table,
    kafka_acls_commands,
    notes,
    operation_of,
    resource_label,
    role_bindings,
)
from processor.kafka.client_config import admin_config

__all__ = ["main", "apply_acls"]

_TIMEOUT_S = 30.0
_EVERYTHING = AclBindingFilter(
    ResourceType.ANY,
    None,  # type: ignore[arg-type]  # name: None matches any (documented), annotated str
    ResourcePatternType.ANY,
    None,  # type: ignore[arg-type]  # principal: likewise
    None,  # type: ignore[arg-type]  # host: likewise
    AclOperation.ANY,
    AclPermissionType.ANY,
)

_Key = tuple[object, ...]


def _key(b: AclBinding) -> _Key:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def _existing(admin: AdminClient, timeout: float) -> set[_Key] | None:
    """Keys of the ACLs already on the cluster, or ``None`` if we may not list them."""
    try:
        found = admin.describe_acls(_EVERYTHING, request_timeout=timeout).result(timeout)
    except (KafkaException, TimeoutError):
        return None
    return {_key(b) for b in found}


def apply_acls(
    settings: Settings, rows: Sequence[RoleAcl], *, timeout: float = _TIMEOUT_S
) -> list[tuple[str, RoleAcl]]:
    """Create the bindings on the cluster; returns ``(state, row)`` per binding, state
    ``created``, ``exists`` or ``applied`` (present now; we may not list ACLs to tell
    which). Raises ``KafkaException`` / ``TimeoutError`` when Kafka refuses or is silent,
    ``ConfigError`` without ``HL7_KAFKA_BOOTSTRAP_SERVERS``."""
    admin = AdminClient(admin_config(settings))
    before = _existing(admin, timeout)
    futures = admin.create_acls([r.binding for r in rows], request_timeout=timeout)
    for future in futures.values():
        future.result(timeout)
    out = []
    for row in rows:
        if before is None:
            state = "applied"
        else:
            state = "exists" if _key(row.binding) in before else "created"
        out.append((state, row))
    return out


def _report(results: Sequence[tuple[str, RoleAcl]]) -> str:
    cells = [
        (state, row.role, row.binding.principal, resource_label(row.binding), operation_of(row.binding).name)
        for state, row in results
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    return "\n".join("  ".join(f"{c[i]:<{widths[i]}}" for i in range(4)) + "  " + c[4] for c in cells)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
        return f"{error.name()}: {error.str()}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {_TIMEOUT_S:.0f} s"
    return type(exc).__name__


def main(args: argparse.Namespace) -> int:
    settings = load_settings()
    principals = Principals.of(
        {
            "edge": args.edge_principal,
            "processor": args.processor_principal,
            "replay": args.replay_principal,
            "admin": args.admin_principal,
        }
    )
    prefix = args.transactional_id_prefix
    rows = role_bindings(settings, principals, transactional_id_prefix=prefix)
    if not args.apply:
        shell = args.format == "kafka-acls"
        print("\n".join(kafka_acls_commands(rows)) if shell else format_table(rows))
        for note in notes(settings, transactional_id_prefix=prefix):
            print(f"{'# ' if shell else ''}note: {note}")  # a shell comment among command lines
        if not shell:
            print("dry run: nothing applied (add --apply to create these ACLs)")
        return 0
    require(settings, "kafka_bootstrap_servers")
    try:
        results = apply_acls(settings, rows)
    except (KafkaException, TimeoutError) as exc:
        raise CommandFailed(
            f"acls: cannot create the ACLs on Kafka at {settings.kafka_bootstrap_servers}: {_error_text(exc)}"
        ) from None
    print(_report(results))
    created = sum(1 for state, _ in results if state == "created")
    existed = sum(1 for state, _ in results if state == "exists")
    unknown = len(results) - created - existed
    summary = f"{created} ACL(s) created, {existed} already present"
    if unknown:
        summary = f"{len(results)} ACL(s) applied (not allowed to list ACLs: new and existing not told apart)"
    print(summary)
    return 0
