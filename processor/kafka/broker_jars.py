"""The local broker's jars: Apache Kafka from Maven Central, pinned in ``kafka-runtime.lock``
(coordinates and SHA-256), fetched once into the user's cache directory (with Maven when it
is on PATH, else straight from the repository) and checked against the lock before use."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from processor.config import MAVEN_CENTRAL
from processor.errors import ConfigError

__all__ = ["KAFKA_VERSION", "cache_dir", "fetch_classpath"]

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
_LOCK_FILE = Path(__file__).with_name("kafka-runtime.lock")
_ROOT_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3"),
)
_COMPLETE_MARKER = ".complete"


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
