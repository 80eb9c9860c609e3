"""Least-privilege Kafka ACLs: one principal per role, with what its code really uses.

Pure: :func:`role_acls` builds ``AclBinding`` objects from ``Settings`` (topic names,
consumer group, transactional id), talks to no broker and reads no environment. Every
binding is ALLOW, host ``*``. What each role's Kafka calls need (checked against a
Kafka 4.1 broker with the ``StandardAuthorizer`` by ``tests/integration/test_kafka_acls.py``):

- **edge** — idempotent producer to the raw topic, plus a metadata probe of that topic
  (``list_topics(topic=raw)``): WRITE, DESCRIBE on it. Nothing on the cluster: since
  Kafka 3.0 (KIP-679) WRITE on any topic authorizes an idempotent producer's
  ``InitProducerId``, so IDEMPOTENT_WRITE is not granted (a broker older than 3.0 would
  need it).
- **processor** — consumer of the raw topic in the consumer group (subscribe, commit
  through ``send_offsets_to_transaction``, ``committed()``), transactional producer to
  the accepted and dead-letter topics: READ, DESCRIBE on raw; READ on the group;
  WRITE, DESCRIBE on accepted and dead-letter; WRITE, DESCRIBE on transactional ids
  with the instances' common prefix (PREFIXED). Its dedupe changelog it writes in the same
  transactions and reads back when a partition is assigned (an assigned consumer under
  the processors' own group id, which never joins or commits): READ, WRITE, DESCRIBE.
  It lists no topics, describes neither the cluster nor any configs, and creates nothing.
- **replay** (``deadletter replay``) — reads the dead-letter topic and its ledger with
  ``read_to_end`` (assigned partitions under a throwaway group ``hl7-reader-<uuid>``
  that never joins or commits: librdkafka only looks up its coordinator, which needs
  DESCRIBE), asks to create the ledger topic on every run (CreateTopics is authorized
  before the broker checks whether the topic exists, so CREATE is needed even when it
  does), and writes raw + ledger in transactions under one fixed transactional id:
  READ, DESCRIBE on dead-letter; READ, WRITE, DESCRIBE, CREATE on the ledger; WRITE,
  DESCRIBE on raw; WRITE, DESCRIBE on its transactional id; DESCRIBE on groups with
  prefix ``hl7-reader-``.
- **admin** — ``topics create`` and topic configuration for the gateway's topics
  (CREATE, DESCRIBE, ALTER_CONFIGS, DESCRIBE_CONFIGS on each), and ACL management:
  ALTER on the cluster (create/delete ACLs) and DESCRIBE on it (list ACLs).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import cast

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from processor.config import Settings
from processor.errors import ConfigError
from processor.kafka.topics import ledger_topic

__all__ = [
    "ROLES",
    "CLUSTER_RESOURCE",
    "DEFAULT_TRANSACTIONAL_ID_PREFIX",
    "READER_GROUP_PREFIX",
    "Principals",
    "RoleAcl",
    "role_acls",
    "role_bindings",
    "notes",
    "ledger_topic",
    "replay_transactional_id",
    "kafka_acls_commands",
    "format_table",
    "resource_label",
    "operation_of",
]

ROLES = ("edge", "processor", "replay", "admin")
CLUSTER_RESOURCE = "kafka-cluster"
# The processors' transactional ids: "hl7-processor-<host>" by default (config.py), the
# pod name "hl7-processor-N" in Kubernetes, "hl7-processor-1/-2" in docker compose.
DEFAULT_TRANSACTIONAL_ID_PREFIX = "hl7-processor-"
# processor.kafka.topic_reader.read_to_end's throwaway group ids: "hl7-reader-<uuid>".
READER_GROUP_PREFIX = "hl7-reader-"

_ALLOW = AclPermissionType.ALLOW
_ANY_HOST = "*"


def replay_transactional_id(settings: Settings) -> str:
    """The transactional id ``DeadLetterReplayer.publish`` uses."""
    return f"{settings.consumer_group}-deadletter-replay"


@dataclass(frozen=True)
class Principals:
    """The Kafka principal of each role (``User:<SASL user or certificate name>``)."""

    edge: str = "User:hl7-edge"
    processor: str = "User:hl7-processor"
    replay: str = "User:hl7-replay"
    admin: str = "User:hl7-admin"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind, sep, name = str(value).partition(":")
            if not sep or not kind or not name or any(c.isspace() for c in value):
                raise ConfigError(f"{f.name} principal must look like 'User:name' (got {value!r})")

    @classmethod
    def of(cls, principals: Principals | Mapping[str, str | None] | None) -> Principals:
        if principals is None:
            return cls()
        if isinstance(principals, Principals):
            return principals
        unknown = sorted(set(principals) - set(ROLES))
        if unknown:
            raise ConfigError(f"unknown role(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in principals.items() if v})


@dataclass(frozen=True)
class RoleAcl:
    """One binding and the role it is for (for tables and reports)."""

    role: str
    binding: AclBinding


def _transactional_id_prefix(settings: Settings, prefix: str | None) -> str:
    chosen = prefix if prefix is not None else DEFAULT_TRANSACTIONAL_ID_PREFIX
    if not chosen:
        raise ConfigError("the transactional id prefix must not be empty (it would cover every id)")
    if not settings.transactional_id.startswith(chosen):
        raise ConfigError(
            f"HL7_TRANSACTIONAL_ID does not start with the transactional id prefix {chosen!r}: "
            "the processors' ACL would not cover it (give --transactional-id-prefix)"
        )
    return chosen


def role_bindings(
    settings: Settings,
    principals: Principals | Mapping[str, str | None] | None = None,
    *,
    transactional_id_prefix: str | None = None,
) -> list[RoleAcl]:
    """Every role's bindings, in role order (edge, processor, replay, admin)."""
    who = Principals.of(principals)
    prefix = _transactional_id_prefix(settings, transactional_id_prefix)
    raw, accepted, dead = settings.topic_raw, settings.topic_accepted, settings.topic_deadletter
    ledger = ledger_topic(settings)
    lit, pre = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    op = AclOperation
    out: list[RoleAcl] = []

    def grant(
        role: str,
        rtype: ResourceType,
        name: str,
        pattern: ResourcePatternType,
        operations: Iterable[AclOperation],
    ) -> None:
        principal = getattr(who, role)
        for operation in operations:
            out.append(
                RoleAcl(role, AclBinding(rtype, name, pattern, principal, _ANY_HOST, operation, _ALLOW))
            )

    grant("edge", topic, raw, lit, (op.WRITE, op.DESCRIBE))

    grant("processor", topic, raw, lit, (op.READ, op.DESCRIBE))
    grant("processor", group, settings.consumer_group, lit, (op.READ,))
    grant("processor", topic, accepted, lit, (op.WRITE, op.DESCRIBE))
    grant("processor", topic, dead, lit, (op.WRITE, op.DESCRIBE))
    grant("processor", topic, settings.dedupe_topic, lit, (op.READ, op.WRITE, op.DESCRIBE))
    grant("processor", txn, prefix, pre, (op.WRITE, op.DESCRIBE))

    grant("replay", topic, dead, lit, (op.READ, op.DESCRIBE))
    grant("replay", topic, ledger, lit, (op.READ, op.WRITE, op.DESCRIBE, op.CREATE))
    grant("replay", topic, raw, lit, (op.WRITE, op.DESCRIBE))
    grant("replay", txn, replay_transactional_id(settings), lit, (op.WRITE, op.DESCRIBE))
    grant("replay", group, READER_GROUP_PREFIX, pre, (op.DESCRIBE,))

    for name in (raw, accepted, dead, ledger, settings.dedupe_topic):
        grant("admin", topic, name, lit, (op.CREATE, op.DESCRIBE, op.ALTER_CONFIGS, op.DESCRIBE_CONFIGS))
    grant("admin", ResourceType.BROKER, CLUSTER_RESOURCE, lit, (op.ALTER, op.DESCRIBE))
    return out


def notes(settings: Settings, *, transactional_id_prefix: str | None = None) -> list[str]:
    """What the bindings cannot express (ALLOW-only ACLs), for the operator to know."""
    prefix = _transactional_id_prefix(settings, transactional_id_prefix)
    replay_id = replay_transactional_id(settings)
    out = []
    if replay_id.startswith(prefix):
        out.append(
            f"the replay's transactional id {replay_id} also starts with the processors' prefix "
            f"{prefix}: the processor principal may use it too (only a DENY ACL could exclude it)"
        )
    return out


def role_acls(
    settings: Settings,
    principals: Principals | Mapping[str, str | None] | None = None,
    *,
    transactional_id_prefix: str | None = None,
) -> list[AclBinding]:
    """The ALLOW bindings for the edge, processor, replay and admin principals."""
    return [
        r.binding
        for r in role_bindings(settings, principals, transactional_id_prefix=transactional_id_prefix)
    ]


# ---------------------------------------------------------------------------- rendering
# AclBinding turns the str / int it may be given into the enum, but annotates its attributes
# with the constructor's ``Enum | str | int``: these read them as what they are.
def operation_of(binding: AclBinding) -> AclOperation:
    return cast(AclOperation, binding.operation)


def _restype_of(binding: AclBinding) -> ResourceType:
    return cast(ResourceType, binding.restype)


def _pattern_type_of(binding: AclBinding) -> ResourcePatternType:
    return cast(ResourcePatternType, binding.resource_pattern_type)


def resource_label(binding: AclBinding) -> str:
    """``TOPIC:hl7.raw``, ``CLUSTER:kafka-cluster``; a PREFIXED pattern ends in ``*``."""
    restype = _restype_of(binding)
    kind = "CLUSTER" if restype == ResourceType.BROKER else restype.name
    pattern = "" if binding.resource_pattern_type == ResourcePatternType.LITERAL else "*"
    return f"{kind}:{binding.name}{pattern}"


def format_table(rows: Iterable[RoleAcl]) -> str:
    """One line per (role, resource): ``ROLE PRINCIPAL RESOURCE OPERATIONS``; a PREFIXED
    resource ends in ``*``."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        key = (row.role, row.binding.principal, resource_label(row.binding))
        grouped.setdefault(key, []).append(operation_of(row.binding).name)
    header = ("ROLE", "PRINCIPAL", "RESOURCE", "OPERATIONS (ALLOW, host *)")
    lines = [header, *((*key, ", ".join(ops)) for key, ops in grouped.items())]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]:<{widths[2]}}  {line[3]}".rstrip()
        for line in lines
    )


_CLI_OPERATION = {
    AclOperation.READ: "Read",
    AclOperation.WRITE: "Write",
    AclOperation.CREATE: "Create",
    AclOperation.DELETE: "Delete",
    AclOperation.ALTER: "Alter",
    AclOperation.DESCRIBE: "Describe",
    AclOperation.CLUSTER_ACTION: "ClusterAction",
    AclOperation.DESCRIBE_CONFIGS: "DescribeConfigs",
    AclOperation.ALTER_CONFIGS: "AlterConfigs",
    AclOperation.IDEMPOTENT_WRITE: "IdempotentWrite",
    AclOperation.ALL: "All",
}
_CLI_RESOURCE = {
    ResourceType.TOPIC: "--topic",
    ResourceType.GROUP: "--group",
    ResourceType.TRANSACTIONAL_ID: "--transactional-id",
}


def kafka_acls_commands(
    rows: Iterable[RoleAcl], bootstrap: str = "$BOOTSTRAP", command_config: str = "admin.properties"
) -> list[str]:
    """The same ACLs as ``kafka-acls.sh --add`` command lines, one per (principal, resource)."""
    grouped: dict[tuple[str, ResourceType, str, ResourcePatternType], list[AclOperation]] = {}
    for row in rows:
        b = row.binding
        key = (b.principal, _restype_of(b), b.name, _pattern_type_of(b))
        grouped.setdefault(key, []).append(operation_of(b))
    lines = []
    for (principal, rtype, name, pattern), operations in grouped.items():
        target = ["--cluster"] if rtype == ResourceType.BROKER else [_CLI_RESOURCE[rtype], name]
        if pattern == ResourcePatternType.PREFIXED:
            target += ["--resource-pattern-type", "prefixed"]
        ops = [part for o in operations for part in ("--operation", _CLI_OPERATION[o])]
        words = [
            "kafka-acls.sh",
            "--bootstrap-server",
            bootstrap,
            "--command-config",
            command_config,
            "--add",
            "--allow-principal",
            principal,
            "--allow-host",
            "*",
            *ops,
            *target,
        ]
        lines.append(" ".join(w if w == "$BOOTSTRAP" else shlex.quote(w) for w in words))
    return lines
