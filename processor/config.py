"""Settings from ``HL7_*`` environment variables (and an optional ``.env`` file).

Built once when a command starts (:func:`load_settings`) and passed down: this module is
the only place that reads ``HL7_*`` variables.

Any ``HL7_KAFKA_<NAME>`` variable that is not a setting of its own (such as
``HL7_KAFKA_BOOTSTRAP_SERVERS``) is passed to librdkafka as ``<name>`` with ``_`` turned
into ``.``, so SASL and TLS need no code: ``HL7_KAFKA_SASL_MECHANISM=SCRAM-SHA-512`` ->
``sasl.mechanism``. ``HL7_SCHEMA_REGISTRY_<NAME>`` likewise goes to the schema registry
client. Both maps are read with the other settings, from the same environment and
``.env`` file, into ``Settings.kafka_extra`` and ``Settings.schema_registry_extra``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource, InitSettingsSource

from processor.errors import ConfigError

__all__ = [
    "Settings",
    "kafka_passthrough",
    "load_settings",
    "require",
    "schema_registry_passthrough",
]

MIB = 1024 * 1024
_KAFKA_PREFIX = "HL7_KAFKA_"
_SCHEMA_REGISTRY_PREFIX = "HL7_SCHEMA_REGISTRY_"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

# A map of pass-through settings: filled from the variables, never parsed from one variable.
PassThrough = Annotated[dict[str, str], NoDecode]


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

    # MLLP listener of the edge (SPEC 4a; docs/edge.md "MLLP over TLS"). Off unless a port is set.
    mllp_port: int | None = None  # unset = no MLLP listener; 0 = any free port
    mllp_host: str | None = None  # unset = edge_host
    mllp_plaintext: bool = False  # development only: no TLS, every connection is mllp_plaintext_principal
    mllp_plaintext_principal: str | None = None  # registry id that plaintext connections send as
    mllp_client_ca_file: Path | None = None  # PEM bundle of the partners' CAs / self-signed certificates
    mllp_tls_certfile: Path | None = None  # server certificate chain (PEM), reloaded when it changes
    mllp_tls_keyfile: Path | None = None  # its private key (PEM)
    mllp_idle_seconds: float = Field(default=300.0, gt=0)  # no byte for this long: connection closed
    mllp_handshake_timeout_seconds: float = Field(default=10.0, gt=0)  # TLS handshake bound
    mllp_max_connections: int = Field(default=256, ge=1)  # open MLLP connections; beyond: closed at once
    # TLS handshakes in progress from one address (IPv6: its /64); beyond: closed at once, so
    # one client's silent connections cannot hold every slot for the handshake timeout.
    mllp_max_handshakes_per_address: int = Field(default=16, ge=1)

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
    batch_max_records: int = 500  # records per transaction
    # Transactions' worth of records collected at once and committed one after another, each
    # one's routing overlapped with the previous one's commit (docs/stream.md "Pipelining");
    # 1 = off (the default: no gain measured on 2 cores).
    pipeline_transactions: int = Field(default=1, ge=1)
    batch_max_ms: int = 100
    transaction_timeout_ms: int = 60_000
    # Decision row 12 (docs/stream.md "Dedupe"): a resend of a message accepted within the window
    # is a DUPLICATE dead letter. Window: seconds, or a number with s/m/h/d ("7d", "36h").
    dedupe_enabled: bool = True
    dedupe_window: int = Field(default=7 * 86_400, gt=0)  # seconds
    dedupe_max_entries: int = Field(default=200_000, ge=1)  # remembered messages per raw partition
    topic_dedupe: str | None = None  # the dedupe changelog; unset = "<HL7_TOPIC_RAW>.dedupe"

    # Pass-through (module docstring): librdkafka and schema registry client settings from
    # the other HL7_KAFKA_* / HL7_SCHEMA_REGISTRY_* variables, read when Settings is built.
    # Given explicitly (load_settings(kafka_extra={...})), a map replaces the environment's.
    kafka_extra: PassThrough = Field(default_factory=dict)
    schema_registry_extra: PassThrough = Field(default_factory=dict)

    # Where the Avro schema files are read from; unset: the package's processor/schemas/.
    schemas_dir: Path | None = None
    # The local development broker (`hl7-processor kafka`, `run` without Kafka, tests): its
    # jar cache (unset: $XDG_CACHE_HOME or ~/.cache, then hl7-gateway/kafka-<version>), the
    # Maven repository the jars come from, and its log4j level.
    local_kafka_cache: Path | None = None
    maven_repository: str = MAVEN_CENTRAL
    local_kafka_log_level: str = "WARN"

    @field_validator("dedupe_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        """``HL7_DEDUPE_WINDOW``: whole seconds, or a number with a unit: ``7d``, ``36h``, ``90m``."""
        if isinstance(value, str):
            text = value.strip().lower()
            unit = _DURATION_UNITS.get(text[-1:]) if text else None
            if unit is not None and text[:-1].strip().isdigit():
                return int(text[:-1]) * unit
        return value

    @property
    def dedupe_topic(self) -> str:
        """The dedupe changelog topic (``HL7_TOPIC_DEDUPE``, default ``<raw topic>.dedupe``)."""
        return self.topic_dedupe or f"{self.topic_raw}.dedupe"

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources (constructor arguments, environment, ``.env``), plus the
        pass-through maps taken from the variables the environment and ``.env`` sources read."""
        passthrough = _PassThroughSource(settings_cls, init_settings, env_settings, dotenv_settings)
        return init_settings, passthrough, env_settings, dotenv_settings, file_secret_settings


def _own_names(prefix: str) -> frozenset[str]:
    """The ``HL7_*`` names of the settings under ``prefix``: never passed through."""
    return frozenset(
        f"HL7_{name.upper()}" for name in Settings.model_fields if f"HL7_{name.upper()}".startswith(prefix)
    )


def _passthrough(prefix: str, variables: Mapping[str, str]) -> dict[str, str]:
    own = _own_names(prefix)
    out: dict[str, str] = {}
    for name, value in variables.items():
        upper = name.upper()
        if upper.startswith(prefix) and upper not in own:
            key = upper[len(prefix) :].lower().replace("_", ".")
            if key:
                out[key] = value
    return out


def kafka_passthrough(environ: Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings from the ``HL7_KAFKA_*`` variables in ``environ`` that are not
    settings of their own: ``HL7_KAFKA_SASL_MECHANISM`` -> ``sasl.mechanism``. Commands use
    the ``kafka_extra`` of the Settings they built, which holds the same map."""
    return _passthrough(_KAFKA_PREFIX, environ)


def schema_registry_passthrough(environ: Mapping[str, str]) -> dict[str, str]:
    """Schema registry client settings from the ``HL7_SCHEMA_REGISTRY_*`` variables in
    ``environ`` other than the gateway's own (``_URL``, ``_AUTO_REGISTER``):
    ``HL7_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` -> ``basic.auth.user.info``,
    ``HL7_SCHEMA_REGISTRY_SSL_CA_LOCATION`` -> ``ssl.ca.location``. Values stay strings."""
    return _passthrough(_SCHEMA_REGISTRY_PREFIX, environ)


class _PassThroughSource(PydanticBaseSettingsSource):
    """``kafka_extra`` and ``schema_registry_extra`` from the variables the environment
    and ``.env`` sources have read (the environment wins, as for every setting), unless
    given as constructor arguments."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: PydanticBaseSettingsSource,
        env: PydanticBaseSettingsSource,
        dotenv: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._given = set(init.init_kwargs) if isinstance(init, InitSettingsSource) else set()
        self._sources = (dotenv, env)  # later wins

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds both maps at once

    def __call__(self) -> dict[str, Any]:
        variables: dict[str, str] = {}
        for source in self._sources:
            if isinstance(source, EnvSettingsSource):  # DotEnvSettingsSource is one too
                variables.update((k, v) for k, v in source.env_vars.items() if v is not None)
        maps = {
            "kafka_extra": _passthrough(_KAFKA_PREFIX, variables),
            "schema_registry_extra": _passthrough(_SCHEMA_REGISTRY_PREFIX, variables),
        }
        return {name: value for name, value in maps.items() if name not in self._given}


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def require(settings: Settings, *names: str) -> None:
    """``ConfigError`` naming the ``HL7_*`` variable of each setting in ``names`` that is
    unset, e.g. ``require(settings, "kafka_bootstrap_servers", "registry_file")``."""
    missing = [f"HL7_{name.upper()}" for name in names if not getattr(settings, name)]
    if len(missing) == 1:
        raise ConfigError(f"{missing[0]} is not set")
    if missing:
        raise ConfigError(f"{', '.join(missing[:-1])} and {missing[-1]} are not set")
