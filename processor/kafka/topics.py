"""Creating the gateway's three topics with settings that fit HL7 documents.

``max.message.bytes`` follows the edge body limit (documents arrive as base64 in
OBX-5). Replication: ``-1`` takes the broker default (1 on a dev broker; set
``default.replication.factor=3`` and ``min.insync.replicas=2`` on a production
cluster, or pass ``--replication-factor 3``).
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from processor.config import Settings
from processor.kafka.client_config import admin_config, message_max_bytes

__all__ = ["topic_configs", "ensure_topics"]

log = logging.getLogger(__name__)


def topic_configs(settings: Settings) -> dict[str, str]:
    """Topic-level settings shared by raw, accepted and dead-letter topics."""
    return {
        "max.message.bytes": str(message_max_bytes(settings)),
        "compression.type": "producer",
        "cleanup.policy": "delete",
        # Raw intake is the audit trail; keep it for 30 days by default.
        "retention.ms": str(30 * 24 * 3600 * 1000),
    }


def ensure_topics(
    settings: Settings,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create the raw, accepted and dead-letter topics; existing ones are left alone.

    Returns ``{topic: "created" | "exists"}``.
    """
    admin = AdminClient(admin_config(settings))
    names = [settings.topic_raw, settings.topic_accepted, settings.topic_deadletter]
    factor = replication_factor if replication_factor is not None else settings.topic_replication_factor
    config = topic_configs(settings)
    if factor >= 3:
        # acks=all then means "at least two copies": one broker may fail without losing data.
        config["min.insync.replicas"] = "2"
    new = [
        NewTopic(name, num_partitions=partitions or settings.topic_partitions,
                 replication_factor=factor, config=config)
        for name in names
    ]
    result: dict[str, str] = {}
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            result[name] = "created"
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise
        log.info("topic %s: %s", name, result[name])
    return result
