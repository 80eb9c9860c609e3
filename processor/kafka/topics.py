"""The gateway's topics: one definition each, created idempotently, checked for drift.

Five topics: ``hl7.raw``, ``hl7.accepted``, ``hl7.deadletter``, the compacted replay
ledger ``<dead-letter topic>.replayed`` (:mod:`processor.deadletter_replay` creates it from
the same definition if it is missing) and the processor's dedupe changelog
(``HL7_TOPIC_DEDUPE``, default ``<raw topic>.dedupe``: compacted, and deleted by age one day
after the dedupe window; exactly as many partitions as the raw topic, see docs/stream.md
"Dedupe"). Retention is per topic (``HL7_TOPIC_*_RETENTION_MS``;
defaults and reasons in docs/operations.md, "Topic settings"). ``max.message.bytes`` follows
the edge body limit (documents arrive as base64 in OBX-5).

Replication: ``-1`` takes the broker default (1 on a dev broker). ``min.insync.replicas``
is ``HL7_TOPIC_MIN_INSYNC_REPLICAS`` if set, else 2 with a replication factor of 3 or
more (``acks=all`` then means "at least two copies") and 1 below; with factor ``-1`` and
no setting it is left to the broker (and not checked).

:func:`check_topics` compares existing topics with these definitions and creates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from processor.config import Settings
from processor.errors import ConfigError, KafkaUnavailable
from processor.kafka.client_config import admin_config, message_max_bytes

__all__ = [
    "TopicSpec",
    "Drift",
    "ledger_topic",
    "ledger_spec",
    "dedupe_spec",
    "topic_specs",
    "topic_configs",
    "min_insync_replicas",
    "ensure_topics",
    "check_topics",
]

log = logging.getLogger(__name__)

_LEDGER_PARTITIONS = 1  # a handful of small records; compaction keeps one per dead letter
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    """What ``topics create`` makes: name, partitions, replication factor, topic configs."""

    name: str
    partitions: int
    replication_factor: int  # -1 = broker default
    config: Mapping[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        return NewTopic(
            self.name,
            num_partitions=self.partitions,
            replication_factor=self.replication_factor,
            config=dict(self.config),
        )


@dataclass(frozen=True)
class Drift:
    """One difference between a topic's definition and the topic as it is."""

    topic: str
    item: str
    actual: str
    expected: str

    def __str__(self) -> str:
        if self.item == "exists":
            return f"{self.topic}: missing (topics create makes it)"
        return f"{self.topic}: {self.item} is {self.actual}, expected {self.expected}"


def ledger_topic(settings: Settings) -> str:
    """The dead-letter replay ledger: ``<dead-letter topic>.replayed``."""
    return f"{settings.topic_deadletter}.replayed"


def _factor(settings: Settings, replication_factor: int | None) -> int:
    factor = settings.topic_replication_factor if replication_factor is None else replication_factor
    if factor == 0 or factor < -1:
        raise ConfigError(
            "HL7_TOPIC_REPLICATION_FACTOR (--replication-factor) must be -1 (broker default) or >= 1"
        )
    return factor


def min_insync_replicas(settings: Settings, replication_factor: int | None = None) -> int | None:
    """The ``min.insync.replicas`` topics get, ``None`` = the broker's default."""
    factor = _factor(settings, replication_factor)
    chosen = settings.topic_min_insync_replicas
    if chosen is not None:
        if factor >= 1 and chosen > factor:
            raise ConfigError(
                f"HL7_TOPIC_MIN_INSYNC_REPLICAS must not exceed the replication factor ({factor}): "
                "every acks=all write would fail"
            )
        return chosen
    if factor == -1:
        return None
    return 2 if factor >= 3 else 1


def _retention(name: str, value: int) -> str:
    if value == 0:
        raise ConfigError(f"{name} must be -1 (unlimited) or a positive number of milliseconds")
    return str(value)


def _data_config(settings: Settings, retention_ms: str, min_isr: int | None) -> dict[str, str]:
    config = {
        "max.message.bytes": str(message_max_bytes(settings)),
        "compression.type": "producer",
        "cleanup.policy": "delete",
        "retention.ms": retention_ms,
    }
    if min_isr is not None:
        config["min.insync.replicas"] = str(min_isr)
    return config


def ledger_spec(settings: Settings, *, replication_factor: int | None = None) -> TopicSpec:
    """The compacted replay ledger (key = dead letter coordinate; the latest entry per key stays)."""
    factor = _factor(settings, replication_factor)
    config = {"cleanup.policy": "compact"}
    min_isr = min_insync_replicas(settings, factor)
    if min_isr is not None:
        config["min.insync.replicas"] = str(min_isr)
    return TopicSpec(ledger_topic(settings), _LEDGER_PARTITIONS, factor, config)


def dedupe_spec(
    settings: Settings, *, partitions: int | None = None, replication_factor: int | None = None
) -> TopicSpec:
    """The dedupe changelog: one partition per raw partition (same numbers), compacted (the
    newest entry per key) and deleted by age a day after the window (nothing older is read)."""
    count = settings.topic_partitions if partitions is None else partitions
    factor = _factor(settings, replication_factor)
    window_ms = settings.dedupe_window * 1000
    config = {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(window_ms + _DAY_MS),
        "segment.ms": str(min(window_ms, _DAY_MS)),  # old segments become deletable in time
    }
    min_isr = min_insync_replicas(settings, factor)
    if min_isr is not None:
        config["min.insync.replicas"] = str(min_isr)
    return TopicSpec(settings.dedupe_topic, count, factor, config)


def topic_specs(
    settings: Settings, *, partitions: int | None = None, replication_factor: int | None = None
) -> list[TopicSpec]:
    """Raw, accepted, dead-letter, ledger and dedupe changelog definitions (raises ``ConfigError``)."""
    count = settings.topic_partitions if partitions is None else partitions
    if count < 1:
        raise ConfigError("HL7_TOPIC_PARTITIONS (--partitions) must be at least 1")
    factor = _factor(settings, replication_factor)
    min_isr = min_insync_replicas(settings, factor)
    retention = {
        settings.topic_raw: _retention("HL7_TOPIC_RAW_RETENTION_MS", settings.topic_raw_retention_ms),
        settings.topic_accepted: _retention(
            "HL7_TOPIC_ACCEPTED_RETENTION_MS", settings.topic_accepted_retention_ms
        ),
        settings.topic_deadletter: _retention(
            "HL7_TOPIC_DEADLETTER_RETENTION_MS", settings.topic_deadletter_retention_ms
        ),
    }
    if len(retention) != 3 or settings.dedupe_topic in retention:
        raise ConfigError(
            "HL7_TOPIC_RAW, HL7_TOPIC_ACCEPTED, HL7_TOPIC_DEADLETTER and HL7_TOPIC_DEDUPE must be "
            "different topics"
        )
    specs = [
        TopicSpec(name, count, factor, _data_config(settings, ms, min_isr)) for name, ms in retention.items()
    ]
    return [
        *specs,
        ledger_spec(settings, replication_factor=factor),
        dedupe_spec(settings, partitions=count, replication_factor=factor),
    ]


def topic_configs(
    settings: Settings, topic: str | None = None, *, replication_factor: int | None = None
) -> dict[str, str]:
    """The topic-level configs ``topics create`` gives ``topic`` (default: the raw topic)."""
    wanted = settings.topic_raw if topic is None else topic
    for spec in topic_specs(settings, replication_factor=replication_factor):
        if spec.name == wanted:
            return dict(spec.config)
    raise ConfigError(f"{wanted} is not one of the gateway's topics")


def _unavailable(settings: Settings, exc: BaseException, timeout: float) -> KafkaUnavailable:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        return KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap_servers}: {error.name()}: {error.str()}")
    return KafkaUnavailable(
        f"Kafka at {settings.kafka_bootstrap_servers} did not answer within {timeout:g} s"
    )


def ensure_topics(
    settings: Settings,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create the raw, accepted, dead-letter, ledger and dedupe changelog topics; existing ones
    are left alone (``check_topics`` reports how they differ). A missing changelog gets as many
    partitions as an existing raw topic has.

    Returns ``{topic: "created" | "exists"}``.
    """
    specs = topic_specs(settings, partitions=partitions, replication_factor=replication_factor)
    if -1 < settings.topic_raw_retention_ms < settings.topic_deadletter_retention_ms or (
        settings.topic_deadletter_retention_ms == -1 and settings.topic_raw_retention_ms != -1
    ):
        log.warning(
            "HL7_TOPIC_RAW_RETENTION_MS is shorter than HL7_TOPIC_DEADLETTER_RETENTION_MS: dead "
            "letters without payload point into %s and may outlive their original",
            settings.topic_raw,
        )
    admin = AdminClient(admin_config(settings))
    raw_count = _partition_count(admin, settings.topic_raw, timeout)
    if raw_count is not None:  # the changelog follows the raw topic as it is, not as configured
        specs = [
            dedupe_spec(settings, partitions=raw_count, replication_factor=spec.replication_factor)
            if spec.name == settings.dedupe_topic
            else spec
            for spec in specs
        ]
    result: dict[str, str] = {}
    futures = admin.create_topics([spec.new_topic() for spec in specs], request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[name] = "created"
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise _unavailable(settings, exc, timeout) from None
        except FutureTimeout:
            raise _unavailable(settings, TimeoutError(), timeout) from None
        log.info("topic %s: %s", name, result[name])
    return result


def _partition_count(admin: AdminClient, topic: str, timeout: float) -> int | None:
    """Partitions of an existing ``topic``; ``None`` when it does not exist (or cannot be seen)."""
    try:  # all topics: a metadata request naming a missing topic may auto-create it
        meta = admin.list_topics(timeout=timeout).topics.get(topic)
    except KafkaException:
        return None
    if meta is None or meta.error is not None:
        return None
    return len(meta.partitions)


def _same(item: str, actual: str | None, expected: str) -> bool:
    if actual is None:
        return False
    if item == "cleanup.policy":  # a list: "compact,delete" == "delete, compact"
        return {p.strip() for p in actual.split(",")} == {p.strip() for p in expected.split(",")}
    return actual.strip() == expected.strip()


def check_topics(
    settings: Settings,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    timeout: float = 30.0,
) -> list[Drift]:
    """How the existing topics differ from their definitions; creates and alters nothing.

    Reported: a missing topic, fewer partitions than configured (more are fine: partitions
    cannot be removed), a dedupe changelog whose partition count is not the raw topic's, a
    different replication factor (unless ``-1``), and every topic config the definition sets
    (``retention.ms``, ``min.insync.replicas``, ``max.message.bytes``, ``cleanup.policy``,
    ``compression.type``, ``segment.ms``) whose effective value differs.
    """
    specs = topic_specs(settings, partitions=partitions, replication_factor=replication_factor)
    admin = AdminClient(admin_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise _unavailable(settings, exc, timeout) from None
    drift: list[Drift] = []
    present: list[TopicSpec] = []
    for spec in specs:
        meta = metadata.topics.get(spec.name)
        if meta is None or meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            drift.append(Drift(spec.name, "exists", "no", "yes"))
            continue
        if meta.error is not None:
            raise KafkaUnavailable(f"cannot describe topic {spec.name}: {meta.error.name()}")
        present.append(spec)
        if len(meta.partitions) < spec.partitions:
            drift.append(Drift(spec.name, "partitions", str(len(meta.partitions)), str(spec.partitions)))
        if spec.replication_factor != -1:
            factors = sorted({len(p.replicas) for p in meta.partitions.values()})
            if factors != [spec.replication_factor]:
                actual = "/".join(str(f) for f in factors) or "?"
                drift.append(Drift(spec.name, "replication factor", actual, str(spec.replication_factor)))
    raw_meta, dedupe_meta = (
        metadata.topics.get(settings.topic_raw),
        metadata.topics.get(settings.dedupe_topic),
    )
    if (
        raw_meta is not None
        and dedupe_meta is not None
        and raw_meta.error is None
        and dedupe_meta.error is None
    ):
        if len(dedupe_meta.partitions) != len(raw_meta.partitions):
            drift.append(
                Drift(
                    settings.dedupe_topic,
                    "partitions",
                    str(len(dedupe_meta.partitions)),
                    f"{len(raw_meta.partitions)} (as many as {settings.topic_raw})",
                )
            )
    if not present:
        return drift
    resources = [ConfigResource(ResourceType.TOPIC, spec.name) for spec in present]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    for spec, resource in zip(present, resources, strict=True):
        try:
            entries = futures[resource].result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            cause = error.name() if error is not None else str(exc)
            raise KafkaUnavailable(f"cannot read the configs of topic {spec.name}: {cause}") from None
        except FutureTimeout:
            raise _unavailable(settings, TimeoutError(), timeout) from None
        for item, expected in spec.config.items():
            entry = entries.get(item)
            value: str | None = entry.value if entry is not None else None
            if not _same(item, value, expected):
                drift.append(Drift(spec.name, item, "unset" if value is None else value, expected))
    return drift
