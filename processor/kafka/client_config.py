"""librdkafka configuration dictionaries built from ``Settings``.

Pass-through ``HL7_KAFKA_*`` settings (SASL, TLS, ...; ``Settings.kafka_extra``) are
applied first and the gateway's own guarantees last, so an operator cannot silently turn off
idempotence or ``read_committed`` by environment variable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import libversion

from processor.config import Settings
from processor.errors import ConfigError
from processor.kafka.client_logging import librdkafka_logger

__all__ = [
    "base_config",
    "producer_config",
    "consumer_config",
    "consumer_group_protocol",
    "admin_config",
    "message_max_bytes",
    "CLASSIC_PROTOCOL_ONLY",
]

log = logging.getLogger(__name__)

# Room for a body at the edge limit plus headers and record overhead.
_RECORD_OVERHEAD = 1024 * 1024


# Consumer settings librdkafka refuses with group.protocol=consumer (KIP-848): there the
# broker assigns partitions (group.remote.assignor picks its assignor) and times sessions
# and heartbeats (broker configs group.consumer.session.timeout.ms / heartbeat.interval.ms).
CLASSIC_PROTOCOL_ONLY = frozenset(
    {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms", "group.protocol.type"}
)
_KIP848_GA_LIBRDKAFKA = 0x020C0000  # 2.12.0; before: early access / preview


def consumer_group_protocol(conf: Mapping[str, Any]) -> str:
    """``classic`` (librdkafka's default) or ``consumer`` (KIP-848), per ``group.protocol``."""
    return str(conf.get("group.protocol", "classic")).strip().lower()


def message_max_bytes(settings: Settings) -> int:
    """Largest record the gateway produces: the edge body limit plus headroom."""
    return settings.max_body_bytes + _RECORD_OVERHEAD


def base_config(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_bootstrap_servers:
        raise ConfigError("HL7_KAFKA_BOOTSTRAP_SERVERS is not set")
    conf: dict[str, Any] = dict(settings.kafka_extra)
    conf["bootstrap.servers"] = settings.kafka_bootstrap_servers
    # librdkafka's own lines through Python logging, repeats held back (no stderr floods).
    conf["logger"] = librdkafka_logger()
    return conf


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """An idempotent producer writing with ``acks=all``: nothing is ACKed that could be lost."""
    conf = base_config(settings)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": conf.get("compression.type", "lz4"),
            "message.max.bytes": message_max_bytes(settings),
            "linger.ms": conf.get("linger.ms", 5),
        }
    )
    conf.update(extra)
    return conf


def consumer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A ``read_committed`` consumer that never commits on its own.

    With ``HL7_KAFKA_GROUP_PROTOCOL=consumer`` a classic-only setting (CLASSIC_PROTOCOL_ONLY)
    is a ConfigError naming its variable, instead of librdkafka's refusal at start-up.
    """
    conf = base_config(settings)
    conf.update(
        {
            "group.id": settings.consumer_group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": max(message_max_bytes(settings), 52428800),
            "max.partition.fetch.bytes": message_max_bytes(settings),
        }
    )
    conf.update(extra)
    if consumer_group_protocol(conf) == "consumer":
        refused = sorted(CLASSIC_PROTOCOL_ONLY.intersection(conf))
        if refused:
            operator = settings.kafka_extra
            names = ", ".join(
                "HL7_KAFKA_" + key.upper().replace(".", "_")
                if key in operator
                else f"{key} (set by the gateway)"
                for key in refused
            )
            raise ConfigError(
                f"{names}: not supported with HL7_KAFKA_GROUP_PROTOCOL=consumer (KIP-848: the broker "
                "assigns partitions and sets session and heartbeat timeouts); unset, or use the classic "
                "protocol"
            )
        version, number = libversion()
        if number < _KIP848_GA_LIBRDKAFKA:
            log.warning(
                "group.protocol=consumer is production-ready from librdkafka 2.12; this is %s", version
            )
    return conf


def admin_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    conf = base_config(settings)
    conf.update(extra)
    return conf
