"""A real single-node Apache Kafka (KRaft) for development and tests.

The broker is the same software users run in production: the ``kafka_2.13`` jars
from Maven Central, pinned in ``kafka-runtime.lock`` (coordinates and SHA-256).
They are fetched once into the user's cache directory, with Maven when it is on
PATH, else straight from Maven Central; either way every jar is checked against
the lock file before it is used. No Docker, no mock, no in-process fake.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processor.config import Settings
from processor.errors import ConfigError
from processor.kafka.broker_config import (
    SASL_FILE,
    SASL_MECHANISM,
    SUPER_USER,
    broker_properties,
    check_sasl_users,
    new_cluster_id,
    recorded_sasl_users,
)
from processor.kafka.broker_jars import KAFKA_VERSION, cache_dir, fetch_classpath

__all__ = [
    "KAFKA_VERSION",
    "LocalKafka",
    "fetch_classpath",
    "cache_dir",
    "free_port",
    "free_ports",
    "SASL_MECHANISM",
    "SUPER_USER",
    "recorded_sasl_users",
]

log = logging.getLogger(__name__)

_LOG4J2_CONFIG = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [kafka] %d{HH:mm:ss} %-5p %c{1}: %m%n
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = STDOUT
"""
# SASL mode: every refused request in broker.log ("Principal = User:x is Denied operation
# = WRITE ... on resource = Topic:LITERAL:hl7.raw"); allowed ones are DEBUG, not logged.
_LOG4J2_DENIALS = """\
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
"""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (all bound at once, so none repeats)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise ConfigError("Java 17+ is needed to run the local Kafka broker (none on PATH)")
    return found


def _die_with_parent() -> None:
    """In the JVM child: receive SIGTERM when the Python parent dies, so no JVM is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in the terminal reaches the parent only; the parent stops the broker.


class _ExitedEarly(ConfigError):
    """The JVM ended before it was ready (e.g. a port taken in the meantime)."""


class LocalKafka:
    """One Apache Kafka process in KRaft mode on 127.0.0.1.

    ``start()`` returns the bootstrap address; ``stop()`` ends the JVM and removes a
    temporary data directory. ``stop()`` then ``start()`` restarts on the same ports
    with the same data (tests use this to take the broker away and bring it back).
    """

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LocalKafka:
        """A broker whose jar cache, Maven repository and log level come from the Settings
        the command already built; ``kwargs`` as for the constructor (``data_dir``, ...)."""
        return cls(
            jar_cache=cache_dir(settings.local_kafka_cache),
            maven_repository=settings.maven_repository,
            log_level=settings.local_kafka_log_level,
            **kwargs,
        )

    def __init__(
        self,
        data_dir: str | Path | None = None,
        port: int = 0,
        heap: str = "768m",
        sasl_users: Mapping[str, str] | None = None,
        *,
        jar_cache: str | Path | None = None,
        maven_repository: str | None = None,
        log_level: str | None = None,
    ) -> None:
        """``sasl_users`` (name -> password) switches to SASL mode: the client listener
        is SASL_PLAINTEXT with SCRAM-SHA-512, these users are created when the storage is
        formatted, and the KRaft ``StandardAuthorizer`` allows nothing without an ACL
        except to the super user ``admin`` (password generated unless given here).
        Development only: passwords travel unencrypted on 127.0.0.1.

        ``jar_cache``, ``maven_repository`` and ``log_level``: where the jars are kept and
        fetched from, and the broker's log4j level; when not given, from ``load_settings()``
        (``HL7_LOCAL_KAFKA_CACHE``, ``HL7_MAVEN_REPOSITORY``, ``HL7_LOCAL_KAFKA_LOG_LEVEL``)."""
        if jar_cache is None or maven_repository is None or log_level is None:
            from processor.config import load_settings

            settings = load_settings()
            jar_cache = settings.local_kafka_cache if jar_cache is None else jar_cache
            maven_repository = maven_repository or settings.maven_repository
            log_level = log_level or settings.local_kafka_log_level
        self._jar_cache = jar_cache
        self._maven_repository = maven_repository
        self._log_level = log_level
        self._sasl_users: dict[str, str] | None = None
        self._admin_password_generated = False
        if sasl_users is not None:
            users = dict(sasl_users)
            if SUPER_USER not in users:
                users[SUPER_USER] = secrets.token_urlsafe(18)
                self._admin_password_generated = True
            check_sasl_users(users)
            self._sasl_users = users
        self._keep = data_dir is not None
        self._data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="hl7-kafka-"))
        ports = free_ports(2)  # distinct: two sockets bound at once
        self.port = port or ports[0]
        self.controller_port = ports[1] if ports[1] != self.port else ports[0]
        # Ports we picked ourselves may be taken by someone else before the JVM binds
        # them: the first start may then retry on fresh ones (a restart keeps its ports).
        self._may_repick_ports = not port
        self._heap = heap
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self._data_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl(self) -> bool:
        return self._sasl_users is not None

    @property
    def sasl_users(self) -> dict[str, str]:
        """SASL mode: every SCRAM user and its password (including the super user)."""
        return dict(self._sasl_users or {})

    def client_config(self, user: str | None = None) -> dict[str, str]:
        """librdkafka settings to reach this broker; in SASL mode as ``user`` (default:
        the super user ``admin``)."""
        conf = {"bootstrap.servers": self.bootstrap}
        if self._sasl_users is not None:
            name = user or SUPER_USER
            if name not in self._sasl_users:
                raise ConfigError(f"no SASL user {name!r} on this broker")
            conf.update(
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": SASL_MECHANISM,
                    "sasl.username": name,
                    "sasl.password": self._sasl_users[name],
                }
            )
        elif user is not None:
            raise ConfigError("this broker runs without SASL: it has no users")
        return conf

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def _command(self, main_class: str, *args: str) -> list[str]:
        jars = fetch_classpath(self._jar_cache, self._maven_repository)
        classpath = os.pathsep.join(str(p) for p in jars)
        log4j = self._data_dir / "log4j2.properties"
        denials = _LOG4J2_DENIALS if self.sasl else ""
        log4j.write_text(_LOG4J2_CONFIG.replace("{level}", self._log_level) + denials)
        return [
            _java(),
            f"-Xmx{self._heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            main_class,
            *args,
        ]

    def _formatted(self) -> bool:
        return (self._data_dir / "logs" / "meta.properties").is_file()

    def _check_recorded_users(self) -> None:
        """SCRAM users are fixed when the storage is formatted: a kept data directory must
        be started in the mode (and with the users) it was formatted with."""
        recorded = recorded_sasl_users(self._data_dir)
        if self._sasl_users is None:
            if recorded is not None:
                raise ConfigError(f"{self._data_dir} was formatted with SASL users: start it in SASL mode")
            return
        if recorded is None:
            raise ConfigError(f"{self._data_dir} was formatted without SASL: use a new data directory")
        requested = dict(self._sasl_users)
        if self._admin_password_generated:  # not chosen by the caller: the recorded one stays
            requested[SUPER_USER] = recorded.get(SUPER_USER, "")
        if requested != recorded:
            raise ConfigError(
                f"{self._data_dir} was formatted with other SASL users or passwords "
                "(they are set at format time): use a new data directory"
            )
        self._sasl_users = recorded

    def _format_storage(self, properties: Path) -> None:
        if self._formatted():
            return
        scram: list[str] = []
        for name, password in (self._sasl_users or {}).items():
            scram += ["--add-scram", f"{SASL_MECHANISM}=[name={name},password={password}]"]
        cmd = self._command(
            "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(properties), *scram
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigError(f"Kafka storage format failed: {result.stdout[-1000:]} {result.stderr[-1000:]}")
        if self._sasl_users is not None:
            users_file = self._data_dir / SASL_FILE
            fd = os.open(users_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(self._sasl_users, handle)

    def start(self, timeout: float = 90.0) -> str:
        if self._process and self._process.poll() is None:
            return self.bootstrap
        attempts = 3 if self._may_repick_ports else 1
        self._may_repick_ports = False
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except _ExitedEarly as exc:
                if attempt == attempts:
                    raise ConfigError(str(exc)) from None
                log.warning("Kafka exited during start-up (attempt %d); retrying on fresh ports", attempt)
                self.port, self.controller_port = free_ports(2)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, timeout: float) -> str:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if self._formatted():
            self._check_recorded_users()
        admin_password = None if self._sasl_users is None else self._sasl_users[SUPER_USER]
        properties = self._data_dir / "server.properties"
        if self.sasl:
            properties.touch(mode=0o600)  # it holds the super user's password
        properties.write_text(
            broker_properties(self._data_dir, self.port, self.controller_port, admin_password)
        )
        self._format_storage(properties)
        with self._log_path.open("ab") as log_file:
            self._process = subprocess.Popen(  # fixed argv, no shell
                self._command("kafka.Kafka", str(properties)),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # needed for PDEATHSIG
            )
        self._wait_ready(timeout)
        log.info("Apache Kafka %s ready at %s (data %s)", KAFKA_VERSION, self.bootstrap, self._data_dir)
        return self.bootstrap

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _cluster_id(self) -> str | None:
        """The cluster id the storage was formatted with (meta.properties)."""
        try:
            for line in (self._data_dir / "logs" / "meta.properties").read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        except OSError:
            pass
        return None

    def _wait_ready(self, timeout: float) -> None:
        """Wait for the listener, then for metadata from *this* broker (its cluster id:
        another broker already on the port must not pass for it), quietly."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        expected = self._cluster_id()
        deadline = time.monotonic() + timeout
        admin = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise _ExitedEarly(f"Kafka exited during start-up:\n{self.log_tail()}")
            if admin is None and self._port_open():
                admin = AdminClient({**self.client_config(), "log_level": 2})
            if admin is not None:
                try:
                    metadata = admin.list_topics(timeout=2)
                    if metadata.brokers and metadata.cluster_id == expected:
                        return
                except KafkaException:
                    pass  # not up yet; retried until the deadline
            time.sleep(0.2)
        self.stop()
        raise ConfigError(f"Kafka did not become ready within {timeout:.0f}s:\n{self.log_tail()}")

    def denials(self) -> list[str]:
        """SASL mode: the authorizer's "is Denied" lines logged so far (see broker.log)."""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if " is Denied operation " in line]

    def log_tail(self, lines: int = 25) -> str:
        """The end of the broker's log (it lives in the data dir, which ``close()`` may remove)."""
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the JVM (SIGTERM, then SIGKILL); the data directory stays for ``start()``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        """Stop and, unless the data directory was given, remove it."""
        self.stop()
        if not self._keep:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
