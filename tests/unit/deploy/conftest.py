"""Shared loaders for the deployment-artifact tests.

No Docker engine or cluster is needed: the artifacts are checked as files, against the
code they configure (settings, metrics, CLI) and against each other (mounts, ports,
targets). Helpers are exposed as fixtures because test modules are imported by path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

# Labels every scraped series may carry besides its own: target labels and static labels.
TARGET_LABELS = frozenset({"job", "instance", "component", "__name__"})

# Enumerated label values from SPEC section 6 (and the reason codes of section 3).
_ENUMERATED: dict[tuple[str, str], frozenset[str]] = {
    ("hl7_edge_requests", "ack"): frozenset({"AA", "AR", "AE", "CA", "CR", "CE", "none"}),
    ("hl7_edge_requests", "transport"): frozenset({"http", "soap", "mllp"}),
    ("hl7_edge_auth_failures", "reason"): frozenset({
        "bad_credentials", "missing_credentials", "network_not_allowed", "rate_limited", "unknown_certificate",
        "tls_handshake",
    }),
    ("hl7_processor_records", "outcome"): frozenset({"accepted", "deadletter"}),
    ("hl7_processor_transactions", "result"): frozenset({"committed", "aborted"}),
    ("hl7_registry_reloads", "result"): frozenset({"ok", "error"}),
}

_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class MetricInfo:
    family: str                 # name as registered (counters without _total)
    kind: str                   # counter, gauge, histogram, info
    labels: frozenset[str]


def _metric_catalog() -> dict[str, MetricInfo]:
    """Every sample name the app can expose, mapped to its family, from processor.metrics."""
    from processor import metrics

    catalog: dict[str, MetricInfo] = {}
    for attr in metrics.__all__:
        collector = getattr(metrics, attr)
        family = collector._name  # noqa: SLF001 - prometheus_client keeps no public accessor
        kind = collector._type  # noqa: SLF001
        labels = frozenset(collector._labelnames)  # noqa: SLF001
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",),
            "info": ("_info",),
        }.get(kind, ("",))
        for suffix in suffixes:
            extra = {"le"} if suffix == "_bucket" else set()
            catalog[family + suffix] = MetricInfo(family, kind, labels | extra)
    return catalog


@pytest.fixture(scope="session")
def metric_catalog() -> dict[str, MetricInfo]:
    return _metric_catalog()


def promql_problems(expr: str, catalog: Mapping[str, MetricInfo]) -> list[str]:
    """Metric names, label names and enumerated label values in ``expr`` the app cannot produce."""
    from processor.reasons import REASON_CODES

    problems: list[str] = []
    used_labels: set[str] = set()
    body = re.sub(r"\[[^\]]*\]", "", expr)  # drop range selectors like [5m] / [$__rate_interval]
    for name, matchers in _SELECTOR.findall(body):
        if not name.startswith("hl7_"):
            continue  # functions, keywords and Prometheus' own series such as `up`
        info = catalog.get(name)
        if info is None:
            problems.append(f"unknown metric {name}")
            continue
        used_labels |= info.labels
        for label, op, value in _MATCHER.findall(matchers or ""):
            if label not in info.labels | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
                continue
            if op != "=":
                continue
            allowed = _ENUMERATED.get((info.family, label))
            if info.family == "hl7_processor_records" and label == "reason":
                allowed = frozenset(REASON_CODES) | {""}
            if allowed is not None and value not in allowed:
                problems.append(f"{name}{{{label}}} never takes the value {value!r}")
    for group in _GROUPING.findall(body):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in used_labels | TARGET_LABELS:
                problems.append(f"grouping by {label}, which no metric in the expression has")
    return problems


@pytest.fixture(scope="session")
def check_promql(metric_catalog: dict[str, MetricInfo]) -> Callable[[str], list[str]]:
    return lambda expr: promql_problems(expr, metric_catalog)


def metric_names(expr: str) -> set[str]:
    body = re.sub(r"\[[^\]]*\]", "", expr)
    return {name for name, _ in _SELECTOR.findall(body) if name.startswith("hl7_")}


@pytest.fixture(scope="session")
def names_in() -> Callable[[str], set[str]]:
    return metric_names


@pytest.fixture(scope="session")
def known_setting() -> Callable[[str], bool]:
    """True for an environment variable the gateway reads (SPEC section 7)."""
    from processor.config import Settings

    fields = {f"HL7_{name.upper()}" for name in Settings.model_fields}
    # Read outside Settings: only the test suite's broker (tests/conftest.py).
    extra = {"HL7_TEST_KAFKA_BOOTSTRAP"}

    def known(name: str) -> bool:
        return name in fields or name in extra or name.startswith("HL7_KAFKA_")

    return known


# ---------------------------------------------------------------- compose


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return _load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


@pytest.fixture(scope="session")
def env_of() -> Callable[[Mapping[str, Any]], dict[str, str]]:
    return service_env


def bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(source, target, read_only) of every bind mount, short or long syntax."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if parts[0].startswith((".", "/")):
                yield parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")
        elif volume.get("type") == "bind":
            yield volume["source"], volume["target"], bool(volume.get("read_only"))


@pytest.fixture(scope="session")
def binds_of() -> Callable[[Mapping[str, Any]], list[tuple[str, str, bool]]]:
    return lambda service: list(bind_mounts(service))


def gateway_services(services: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Services that run the gateway image (hl7-processor subcommands)."""
    return {name: svc for name, svc in services.items() if "build" in svc}


@pytest.fixture(scope="session")
def gateway(services: dict[str, dict[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return gateway_services(services)


def listen_port(service: Mapping[str, Any]) -> int:
    """Port an edge or processor container serves /metrics on, from its command and env."""
    from processor.config import Settings

    env = service_env(service)
    command = service.get("command") or []
    defaults = Settings.model_fields
    if command[:1] == ["edge"]:
        return int(env.get("HL7_EDGE_PORT", defaults["edge_port"].default))
    if command[:1] == ["stream"]:
        return int(env.get("HL7_METRICS_PORT", defaults["metrics_port"].default))
    raise AssertionError(f"no metrics port for command {command}")


@pytest.fixture(scope="session")
def port_of() -> Callable[[Mapping[str, Any]], int]:
    return listen_port


# ---------------------------------------------------------------- kubernetes


def k8s_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            docs.extend(doc for doc in yaml.safe_load_all(handle) if doc)
    return docs


@pytest.fixture(scope="session")
def kustomization() -> dict[str, Any]:
    return _load_yaml(K8S / "kustomization.yaml")


KUBECTL = shutil.which("kubectl")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` (offline): the objects exactly as `kubectl apply -k` sends them."""
    assert KUBECTL
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.fixture(scope="session")
def k8s_files(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of the files listed under resources, as written."""
    return k8s_documents(K8S / name for name in kustomization["resources"])


@pytest.fixture(scope="session")
def k8s_rendered() -> bool:
    """Whether k8s_objects is kustomize's output (kubectl on PATH) or the raw files."""
    return KUBECTL is not None


@pytest.fixture(scope="session")
def k8s_objects(k8s_files: list[dict[str, Any]], k8s_rendered: bool) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k deploy/k8s` applies: kustomize's rendering when kubectl
    is on PATH (namespace, labels on pod templates, image), else the files as written."""
    return kustomize(K8S) if k8s_rendered else k8s_files


@pytest.fixture(scope="session")
def monitoring_objects() -> list[dict[str, Any]]:
    """deploy/k8s/monitoring (Prometheus Operator CRDs), rendered when kubectl is on PATH."""
    if KUBECTL is not None:
        return kustomize(K8S / "monitoring")
    listed = _load_yaml(K8S / "monitoring" / "kustomization.yaml")["resources"]
    return k8s_documents(K8S / "monitoring" / name for name in listed)
