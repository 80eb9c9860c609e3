"""Every deployment file parses: a typo in YAML or JSON fails here, not at deploy time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
YAML_FILES = sorted(
    [ROOT / "docker-compose.yml", *(ROOT / "deploy").rglob("*.yml"), *(ROOT / "deploy").rglob("*.yaml")]
)
JSON_FILES = sorted((ROOT / "deploy").rglob("*.json"))


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", YAML_FILES, ids=_ids(YAML_FILES))
def test_yaml_file_parses_to_mappings(path: Path) -> None:
    with path.open(encoding="utf-8") as handle:
        documents = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    assert documents, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in documents)


@pytest.mark.parametrize("path", JSON_FILES, ids=_ids(JSON_FILES))
def test_json_file_parses(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_the_expected_artifacts_exist() -> None:
    expected = [
        "docker-compose.yml",
        ".dockerignore",
        "deploy/Dockerfile",
        "deploy/healthcheck.py",
        "deploy/registry/registry.yaml",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/dashboards/hl7-gateway.json",
        "deploy/k8s/kustomization.yaml",
        "docs/operations.md",
    ]
    missing = [name for name in expected if not (ROOT / name).is_file()]
    assert not missing
    assert JSON_FILES and len(YAML_FILES) > 10
