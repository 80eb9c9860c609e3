"""The local broker's ``server.properties``: listeners (plain, or SASL/SCRAM with ACLs
enforced), the single-node settings, and the SCRAM users of a SASL data directory."""

from __future__ import annotations

import json
import re
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable, Mapping
from pathlib import Path

from processor.errors import ConfigError

__all__ = [
    "SASL_FILE",
    "SASL_MECHANISM",
    "SUPER_USER",
    "broker_properties",
    "check_sasl_users",
    "new_cluster_id",
    "recorded_sasl_users",
]

# SASL mode (development only): SCRAM on the client listener, every request authorized.
SASL_MECHANISM = "SCRAM-SHA-512"
SUPER_USER = "admin"  # the broker's own identity (inter-broker and broker-to-controller)
SASL_FILE = "sasl-users.json"  # the SCRAM users the storage was formatted with (mode 0600)
_SASL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Characters safe both inside kafka-storage's 'SCRAM-SHA-512=[name=..,password=..]' and a
# JAAS quoted string: no quotes, backslashes, brackets, commas, '=' or whitespace.
_SASL_PASSWORD = re.compile(r"[A-Za-z0-9._~!@#$%^&*()+:;?/<>{}|-]{1,256}")


def check_sasl_users(users: Mapping[str, str]) -> None:
    for name, password in users.items():
        if not _SASL_NAME.fullmatch(name):
            raise ConfigError(f"SASL user name {name!r}: use letters, digits, '.', '_' or '-'")
        if not _SASL_PASSWORD.fullmatch(password):
            raise ConfigError(
                f"SASL password of {name!r}: 1-256 characters, no quotes, backslashes, "
                "brackets, commas, '=' or whitespace"
            )


def recorded_sasl_users(data_dir: str | Path) -> dict[str, str] | None:
    """The SCRAM users (name -> password) a SASL data directory was formatted with, or
    ``None`` if it was not (yet) formatted in SASL mode."""
    try:
        return dict(json.loads((Path(data_dir) / SASL_FILE).read_text()))
    except (OSError, ValueError):
        return None


def _jaas(module: str, user: str, password: str, *extra: str) -> str:
    fields = " ".join((f'username="{user}"', f'password="{password}"', *extra))
    return f"{module} required {fields};"


def _listener_properties(port: int, controller_port: int, admin_password: str | None) -> dict[str, str]:
    if admin_password is None:
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
    scram = SASL_MECHANISM.lower()
    return {
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        # The controller listener authenticates too (PLAIN with one static user: SCRAM
        # credentials live in the metadata log, which the controller serves, so it cannot
        # use them itself). A PLAINTEXT controller listener would make every local
        # connection to it User:ANONYMOUS, which would then need to be a super user.
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
        f"listener.name.sasl_plaintext.{scram}.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.scram.ScramLoginModule", SUPER_USER, admin_password
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule",
            SUPER_USER,
            admin_password,
            f'user_{SUPER_USER}="{admin_password}"',
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{SUPER_USER}",
        "allow.everyone.if.no.acl.found": "false",
    }


def broker_properties(
    data_dir: Path, port: int, controller_port: int, admin_password: str | None = None
) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        **_listener_properties(port, controller_port, admin_password),
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        # One node: internal topics must be sized for it or transactions and groups hang.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Documents arrive as base64 in OBX-5: allow records above the 10 MiB body limit.
        "message.max.bytes": str(16 * 1024 * 1024),
        "replica.fetch.max.bytes": str(16 * 1024 * 1024),
        "auto.create.topics.enable": "true",
        "log.retention.hours": "24",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: URL-safe base64 of 16 random bytes, never starting with '-'.

    Kafka's own ``Uuid.randomUuid`` redraws such ids for the same reason: ``kafka-storage
    format -t -abc…`` reads the id as an option and fails (1 start in 64 did, in CI).
    """
    while True:
        cluster_id = urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
