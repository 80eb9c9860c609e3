"""A real single-node Apache Kafka (KRaft) for development and tests.

The broker is the same software users run in production: the ``kafka_2.13`` jars
from Maven Central, pinned in ``kafka-runtime.lock`` (coordinates and SHA-256).
They are fetched once into the user's cache directory, with Maven when it is on
PATH, else straight from Maven Central; either way every jar is checked against
the lock file before it is used. No Docker, no mock, no in-process fake.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.config import MAVEN_CENTRAL, Settings
from processor.errors import ConfigError

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

KAFKA_VERSION = "4.1.1"
_LOCK_FILE = Path(__file__).with_name("kafka-runtime.lock")
_ROOT_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3"),
)
_COMPLETE_MARKER = ".complete"

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


@dataclass(frozen=True)
class _Artifact:
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repository: str) -> str:
        path = self.group.replace(".", "/")
        return f"{repository.rstrip('/')}/{path}/{self.artifact}/{self.version}/{self.filename}"


def _locked_artifacts() -> list[_Artifact]:
    rows = []
    for line in _LOCK_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            rows.append(_Artifact(*line.split("\t")))
    return rows


def cache_dir(configured: str | Path | None = None) -> Path:
    """Where the broker's jars live: ``configured`` (``Settings.local_kafka_cache``, from
    ``HL7_LOCAL_KAFKA_CACHE``) or ``$XDG_CACHE_HOME`` / ``~/.cache``, then ``hl7-gateway/kafka-<version>``."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hl7-gateway" / f"kafka-{KAFKA_VERSION}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(directory: Path, artifacts: list[_Artifact]) -> None:
    for art in artifacts:
        jar = directory / art.filename
        if not jar.is_file():
            raise ConfigError(f"Kafka runtime: {art.filename} missing after fetch")
        if _sha256(jar) != art.sha256:
            raise ConfigError(f"Kafka runtime: checksum mismatch for {art.filename}")


def _fetch_with_maven(target: Path) -> None:
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in _ROOT_ARTIFACTS
    )
    pom = (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.hl7gateway</groupId><artifactId>kafka-runtime</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>"
    )
    with tempfile.TemporaryDirectory(prefix="hl7-kafka-pom-") as tmp:
        (Path(tmp) / "pom.xml").write_text(pom)
        cmd = [
            "mvn",
            "-q",
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigError(f"mvn could not fetch Kafka {KAFKA_VERSION}: {result.stdout[-2000:]}")


def _fetch_direct(target: Path, artifacts: list[_Artifact], repository: str) -> None:
    for art in artifacts:
        dest = target / art.filename
        log.info("downloading %s", art.filename)
        with urllib.request.urlopen(art.url(repository), timeout=60) as response, dest.open("wb") as out:
            shutil.copyfileobj(response, out)


def fetch_classpath(cache: str | Path | None = None, repository: str = MAVEN_CENTRAL) -> list[Path]:
    """The broker's jars, fetched and verified once into ``cache_dir(cache)``, then reused.

    ``repository`` (``Settings.maven_repository``) is where they are downloaded from when
    ``mvn`` is not on PATH (Maven uses its own settings)."""
    directory = cache_dir(cache)
    artifacts = _locked_artifacts()
    if (directory / _COMPLETE_MARKER).is_file():
        return [directory / a.filename for a in artifacts]
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="kafka-jars-", dir=directory.parent))
    try:
        if shutil.which("mvn"):
            log.info("fetching Apache Kafka %s with Maven (once)", KAFKA_VERSION)
            _fetch_with_maven(staging)
        else:
            log.info("no mvn on PATH: fetching Apache Kafka %s from %s (once)", KAFKA_VERSION, repository)
            _fetch_direct(staging, artifacts, repository)
        _verify(staging, artifacts)
        (staging / _COMPLETE_MARKER).write_text(KAFKA_VERSION)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return [directory / a.filename for a in artifacts]


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


# SASL mode (development only): SCRAM on the client listener, every request authorized.
SASL_MECHANISM = "SCRAM-SHA-512"
SUPER_USER = "admin"  # the broker's own identity (inter-broker and broker-to-controller)
_SASL_FILE = "sasl-users.json"  # the SCRAM users the storage was formatted with (mode 0600)
_SASL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Characters safe both inside kafka-storage's 'SCRAM-SHA-512=[name=..,password=..]' and a
# JAAS quoted string: no quotes, backslashes, brackets, commas, '=' or whitespace.
_SASL_PASSWORD = re.compile(r"[A-Za-z0-9._~!@#$%^&*()+:;?/<>{}|-]{1,256}")


def _check_sasl_users(users: Mapping[str, str]) -> None:
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
        return dict(json.loads((Path(data_dir) / _SASL_FILE).read_text()))
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


def _broker_properties(
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


class _ExitedEarly(ConfigError):
    """The JVM ended before it was ready (e.g. a port taken in the meantime)."""


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: URL-safe base64 of 16 random bytes, never starting with '-'.

    Kafka's own ``Uuid.randomUuid`` redraws such ids for the same reason: ``kafka-storage
    format -t -abc…`` reads the id as an option and fails (1 start in 64 did, in CI).
    """
    while True:
        cluster_id = urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


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
            _check_sasl_users(users)
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
            users_file = self._data_dir / _SASL_FILE
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
            _broker_properties(self._data_dir, self.port, self.controller_port, admin_password)
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
