"""Grafana provisioning and the HL7 Gateway dashboard."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "hl7-gateway.json").read_text(encoding="utf-8"))
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
TARGETS = [(p["title"], t) for p in PANELS for t in p["targets"]]
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]


def test_datasource_points_at_the_compose_prometheus(services: dict[str, Any]) -> None:
    (source,) = DATASOURCES
    assert source["type"] == "prometheus"
    url = urlsplit(source["url"])
    assert url.hostname in services
    assert f"127.0.0.1:{url.port}:{url.port}" in services[url.hostname]["ports"]


def test_dashboard_provider_reads_the_mounted_dashboards(
    services: dict[str, Any], binds_of: Callable[[Mapping[str, Any]], list[tuple[str, str, bool]]]
) -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hl7-gateway.yml").read_text())
    (entry,) = provider["providers"]
    mounts = {target: source for source, target, _ro in binds_of(services["grafana"])}
    assert mounts[entry["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"


def test_dashboard_identity_and_layout() -> None:
    assert DASHBOARD["uid"] == "hl7-gateway" and DASHBOARD["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_panels_use_the_datasource_variable() -> None:
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    allowed = {f"${{{variable['name']}}}", DATASOURCES[0]["uid"]}
    for panel in PANELS:
        assert panel["datasource"]["uid"] in allowed, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in allowed, panel["title"]


@pytest.mark.parametrize("title,target", TARGETS, ids=[f"{t}:{q['refId']}" for t, q in TARGETS])
def test_queries_use_only_metrics_and_labels_the_app_exposes(
    title: str, target: dict[str, Any], check_promql: Callable[[str], list[str]]
) -> None:
    assert check_promql(target["expr"]) == []


def _panel_exprs(fragment: str) -> list[str]:
    return [t["expr"] for _title, t in TARGETS if fragment in t["expr"]]


def test_required_views_are_on_the_dashboard() -> None:
    assert any("by (ack)" in e for e in _panel_exprs("hl7_edge_requests_total")), "intake by ACK code"
    assert any(
        "by (reason)" in e and 'outcome="deadletter"' in e for e in _panel_exprs("hl7_processor_records_total")
    ), "dead letters by reason"
    assert _panel_exprs("hl7_edge_auth_failures_total"), "auth failures"
    assert _panel_exprs("hl7_processor_consumer_lag"), "consumer lag"
    for histogram in ("hl7_edge_publish_duration_seconds", "hl7_processor_end_to_end_seconds"):
        quantiles = [e for e in _panel_exprs(f"{histogram}_bucket") if e.startswith("histogram_quantile(")]
        assert len(quantiles) >= 2, f"{histogram} percentiles"
        assert all("by (le)" in e for e in quantiles)


def test_dead_letter_stat_leaves_resends_out() -> None:
    """Row 12: a DUPLICATE is normal traffic; the stat that turns orange at 1 must not count it."""
    (panel,) = [p for p in PANELS if p["title"] == "Dead letters (1h)"]
    (target,) = panel["targets"]
    assert 'reason!="DUPLICATE"' in target["expr"]


def test_end_to_end_panel_marks_the_alert_threshold() -> None:
    """The p99 line is drawn against HL7EndToEndLatencyHigh's threshold (the buckets reach 1 h,
    so the panel shows real values above it)."""
    import re

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    (rule,) = [r for g in rules for r in g["rules"] if r["alert"] == "HL7EndToEndLatencyHigh"]
    threshold = float(re.search(r">\s*([0-9.]+)\s*$", rule["expr"].strip()).group(1))
    (panel,) = [p for p in PANELS if any("hl7_processor_end_to_end_seconds_bucket" in t["expr"] for t in p["targets"])]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps if s["value"] is not None] == [threshold]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
