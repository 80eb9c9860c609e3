"""``hl7-processor kafka``: a local Apache Kafka in the foreground until Ctrl-C.

``--sasl``: the client listener is SASL_PLAINTEXT with SCRAM-SHA-512 and the KRaft
``StandardAuthorizer`` refuses whatever no ACL allows; one SCRAM user per role
(``hl7-edge``, ``hl7-processor``, ``hl7-replay``, ``hl7-admin``) plus the super user
``admin`` are created with random passwords, which are printed (development only).
A kept ``--data-dir`` keeps its users: they are set when the storage is formatted.
"""

from __future__ import annotations

import argparse
import secrets
import threading

from processor.config import load_settings
from processor.kafka.local_broker import (
    KAFKA_VERSION,
    SASL_MECHANISM,
    SUPER_USER,
    LocalKafka,
    recorded_sasl_users,
)
from processor.shutdown import on_shutdown_signal


def _role_users() -> list[str]:
    from processor.kafka.acls import ROLES, Principals

    defaults = Principals()
    return [getattr(defaults, role).partition(":")[2] for role in ROLES]


def _sasl_users(data_dir: str | None) -> dict[str, str]:
    recorded = recorded_sasl_users(data_dir) if data_dir else None
    if recorded is not None:
        return recorded
    return {name: secrets.token_urlsafe(12) for name in _role_users()}


def _print_sasl(broker: LocalKafka) -> None:
    users = broker.sasl_users
    print(
        f"SASL_PLAINTEXT, {SASL_MECHANISM}; ACLs enforced (StandardAuthorizer, "
        f"super user {SUPER_USER}, nothing allowed without an ACL)",
        flush=True,
    )
    print("users (development only; passwords live in the data directory):", flush=True)
    width = max(len(name) for name in users)
    for name, password in sorted(users.items(), key=lambda item: (item[0] != SUPER_USER, item[0])):
        print(f"  {name:<{width}}  {password}{'  (super user)' if name == SUPER_USER else ''}", flush=True)
    print("export HL7_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT", flush=True)
    print(f"export HL7_KAFKA_SASL_MECHANISM={SASL_MECHANISM}", flush=True)
    print("export HL7_KAFKA_SASL_USERNAME=<user> HL7_KAFKA_SASL_PASSWORD=<password>", flush=True)
    print(f"as {SUPER_USER}: hl7-processor topics create && hl7-processor acls --apply", flush=True)
    print(f"refused requests are logged in {broker.data_dir / 'broker.log'}", flush=True)


def main(args: argparse.Namespace) -> int:
    sasl = getattr(args, "sasl", False)
    settings = load_settings()
    stop = threading.Event()
    on_shutdown_signal(stop.set)
    # A ConfigError (no Java, a data directory formatted in the other mode, ...) goes on to
    # processor.cli: one line, exit 2.
    broker = LocalKafka.from_settings(
        settings,
        data_dir=args.data_dir,
        port=args.port,
        sasl_users=_sasl_users(args.data_dir) if sasl else None,
    )
    try:
        bootstrap = broker.start()
        print(f"Apache Kafka {KAFKA_VERSION} (KRaft, single node) ready", flush=True)
        print(f"bootstrap: {bootstrap}", flush=True)
        print(f"export HL7_KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
        if sasl:
            _print_sasl(broker)
        print(f"data: {broker.data_dir}{'' if args.data_dir else ' (removed on exit)'}", flush=True)
        stop.wait()
    finally:
        broker.close()
        print("Kafka stopped", flush=True)
    return 0
