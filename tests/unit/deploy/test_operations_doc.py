"""docs/operations.md (the README's operations fragment) stays true to the artifacts."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_architecture_is_a_mermaid_diagram() -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", DOC, re.S)
    assert blocks and blocks[0].lstrip().startswith(("flowchart", "graph"))
    for component in ("edge", "hl7.raw", "hl7.accepted", "hl7.deadletter", "Prometheus", "Grafana"):
        assert component in blocks[0], component


def test_every_alert_has_a_runbook_section() -> None:
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    headings = set(re.findall(r"^### (\S+)\s*$", DOC, re.M))
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["alert"] in headings, rule["alert"]


def test_every_setting_named_in_the_doc_exists(known_setting: Callable[[str], bool]) -> None:
    named = set(re.findall(r"\b(HL7_[A-Z0-9_]*[A-Z0-9])\b", DOC))
    assert named and not {name for name in named if not known_setting(name)}


def test_scaling_and_security_topics_are_covered() -> None:
    for phrase in ("StatefulSet", "HL7_TRANSACTIONAL_ID", "partitions", "SASL_SSL", "HL7_KAFKA_SSL_CA_LOCATION",
                   "subPath", "kubectl -n hl7-gateway create secret generic"):
        assert phrase in DOC, phrase
