"""Settings from ``HL7_*`` environment variables (and an optional ``.env`` file).

Any ``HL7_KAFKA_<NAME>`` variable other than ``HL7_KAFKA_BOOTSTRAP_SERVERS`` is
passed to librdkafka as ``<name>`` with ``_`` turned into ``.``, so SASL and TLS
need no code: ``HL7_KAFKA_SASL_MECHANISM=SCRAM-SHA-512`` -> ``sasl.mechanism``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "kafka_passthrough", "load_settings", "schema_registry_passthrough"]

MIB = 1024 * 1024
_PASSTHROUGH_PREFIX = "HL7_KAFKA_"
_NOT_PASSTHROUGH = {"HL7_KAFKA_BOOTSTRAP_SERVERS"}
_SR_PASSTHROUGH_PREFIX = "HL7_SCHEMA_REGISTRY_"


def _default_transactional_id() -> str:
    return f"hl7-processor-{socket.gethostname()}"


class Settings(BaseSettings):
    """Every knob of the gateway; names map to ``HL7_<FIELD>`` in upper case."""

    # env_ignore_empty: ``HL7_REGISTRY_FILE=`` means "not set", not the path ".".
    model_config = SettingsConfigDict(
        env_prefix="HL7_", env_file=".env", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = `run` starts a local broker"
    )
    registry_file: Path | None = None
    registry_reload_seconds: float = 2.0

    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    edge_public_url: str | None = None  # e.g. https://hl7.example.org; WSDL endpoint base
    edge_tls_certfile: Path | None = None  # PEM chain; with edge_tls_keyfile the edge serves HTTPS
    edge_tls_keyfile: Path | None = None
    metrics_port: int = 9464
    max_body_bytes: int = 10 * MIB
    trusted_proxies: str = ""
    publish_timeout_seconds: float = 10.0
    login_failures_per_minute: int = 10
    login_lockout_seconds: float = 60.0
    # A username lock-out never refuses an address (IPv6: its /64) that signed in as that
    # username within this many seconds.
    login_known_address_seconds: float = 86_400.0
    argon2_workers: int = 2

    # Limits against hostile clients (docs/edge.md "Hardening"; defaults borrowed from
    # nginx, Envoy and Kestrel, see there).
    edge_header_timeout_seconds: float = 10.0  # request line + headers must arrive within this
    edge_body_min_rate_bytes: int = 240  # bytes/s a request body must keep up (Kestrel's default)
    edge_body_rate_grace_seconds: float = 5.0  # ... measured after this grace period
    edge_keepalive_seconds: float = 30.0  # idle time allowed between requests on one connection
    edge_max_header_count: int = 100  # request headers (Envoy, Kestrel: 100); 431 above
    edge_max_header_bytes: int = 32_768  # request line + headers (nginx, Kestrel: 32 KiB); 431 above
    edge_max_connections: int = 2048  # open connections; beyond: 503 + Retry-After, then close
    edge_max_requests_in_progress: int = 128  # concurrent requests; beyond: 503 + Retry-After
    edge_max_buffered_body_bytes: int = 64 * MIB  # request bodies held at once; beyond: 503
    soap_workers: int = 2  # threads parsing SOAP envelopes (off the event loop)

    topic_raw: str = "hl7.raw"
    topic_accepted: str = "hl7.accepted"
    topic_deadletter: str = "hl7.deadletter"
    topic_partitions: int = 6
    topic_replication_factor: int = -1
    # Per-topic settings for `topics create` and `topics create --check` (docs/operations.md
    # "Topic settings"). Retention in ms, -1 = unlimited. Raw: the transport audit trail, and
    # dead letters without payload point into it, so keep it at least as long as dead letters.
    topic_raw_retention_ms: int = Field(default=90 * 24 * 3600 * 1000, ge=-1)
    topic_accepted_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, ge=-1)
    topic_deadletter_retention_ms: int = Field(default=90 * 24 * 3600 * 1000, ge=-1)
    # unset: 2 with a replication factor of 3 or more, 1 below; the broker's default with -1
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    # Log lines: "text" (human) or "json" (one object per line: ts, level, logger, message).
    log_format: str = Field(default="text", pattern=r"(?i)^(text|json)$")

    schema_registry_url: str | None = None
    # Register the output schemas under `<topic>-value` at start-up (`hl7-processor run` turns
    # it on). Off (production): the subject must already hold our schema, or a latest version
    # that writes our records losslessly; otherwise the processor exits 2. Any other
    # HL7_SCHEMA_REGISTRY_<NAME> goes to the registry client as `<name>` (see
    # schema_registry_passthrough).
    schema_registry_auto_register: bool = False
    consumer_group: str = "hl7-processor"
    transactional_id: str = Field(default_factory=_default_transactional_id)
    batch_max_records: int = 500
    batch_max_ms: int = 100
    transaction_timeout_ms: int = 60_000

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]


def _environment() -> dict[str, str]:
    """The ``.env`` file's variables (if the file exists) overridden by the real environment,
    the same precedence ``Settings`` applies to its declared fields."""
    from dotenv import dotenv_values

    merged = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    merged.update(os.environ)
    return merged


def kafka_passthrough(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka settings from ``HL7_KAFKA_*`` variables (SASL, TLS, ...), from the
    environment or the ``.env`` file."""
    env = _environment() if environ is None else environ
    out: dict[str, str] = {}
    for name, value in env.items():
        upper = name.upper()
        if upper.startswith(_PASSTHROUGH_PREFIX) and upper not in _NOT_PASSTHROUGH:
            key = upper[len(_PASSTHROUGH_PREFIX) :].lower().replace("_", ".")
            if key:
                out[key] = value
    return out


def schema_registry_passthrough(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Schema registry client settings from ``HL7_SCHEMA_REGISTRY_*`` variables other than
    the gateway's own (``_URL``, ``_AUTO_REGISTER``), from the environment or the ``.env``
    file: ``HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` -> ``basic.auth.user.info``,
    ``HL7_SCHEMA_REGISTRY_SSL_CA_LOCATION`` -> ``ssl.ca.location``. Values stay strings."""
    env = _environment() if environ is None else environ
    own = {f"HL7_{name.upper()}" for name in Settings.model_fields if name.startswith("schema_registry_")}
    out: dict[str, str] = {}
    for name, value in env.items():
        upper = name.upper()
        if upper.startswith(_SR_PASSTHROUGH_PREFIX) and upper not in own:
            key = upper[len(_SR_PASSTHROUGH_PREFIX) :].lower().replace("_", ".")
            if key:
                out[key] = value
    return out


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
