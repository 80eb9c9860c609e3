"""Prometheus config and alert rules: targets exist, metrics exist, rules are complete."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import importlib.util
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
SEVERITIES = {"critical", "warning", "info"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


CONFIG = _load(PROMETHEUS / "prometheus.yml")
RULES = [rule for group in _load(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]
ALERT_IDS = [rule.get("alert", "?") for rule in RULES]


def _targets(job: str) -> list[str]:
    (config,) = [c for c in CONFIG["scrape_configs"] if c["job_name"] == job]
    return [t for static in config["static_configs"] for t in static["targets"]]


def test_every_gateway_process_is_scraped_on_the_port_it_serves(
    gateway: Mapping[str, Mapping[str, Any]], port_of: Callable[..., int]
) -> None:
    scraped = set(_targets("hl7-edge")) | set(_targets("hl7-processor"))
    expected = {
        f"{name}:{port_of(svc)}" for name, svc in gateway.items() if svc["command"][:1] in (["edge"], ["stream"])
    }
    assert scraped == expected


def test_edge_and_processor_jobs_scrape_the_right_roles(gateway: Mapping[str, Mapping[str, Any]]) -> None:
    for target in _targets("hl7-edge"):
        assert gateway[target.split(":")[0]]["command"] == ["edge"]
    for target in _targets("hl7-processor"):
        assert gateway[target.split(":")[0]]["command"] == ["stream"]


def test_rule_files_are_the_mounted_alerts(
    services: dict[str, Any], binds_of: Callable[[Mapping[str, Any]], list[tuple[str, str, bool]]]
) -> None:
    mounts = {target: source for source, target, _ro in binds_of(services["prometheus"])}
    for rule_file in CONFIG["rule_files"]:
        assert mounts.get(rule_file) == "./deploy/prometheus/alerts.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"


@pytest.mark.parametrize("rule", RULES, ids=ALERT_IDS)
def test_alert_rule_is_complete(rule: dict[str, Any]) -> None:
    assert rule.get("alert") and rule.get("expr")
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "every alert needs a for: duration"
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert "#" in annotations["runbook_url"]


@pytest.mark.parametrize("rule", RULES, ids=ALERT_IDS)
def test_alert_uses_only_metrics_and_labels_the_app_exposes(
    rule: dict[str, Any], check_promql: Callable[[str], list[str]]
) -> None:
    assert check_promql(rule["expr"]) == []


def _anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_monitoring", ROOT / "deploy" / "generate_monitoring.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()


def test_runbook_base_is_an_absolute_link_to_the_operations_doc() -> None:
    base = GENERATOR.RUNBOOK_BASE
    assert base.startswith("https://") and "#" not in base
    assert base.endswith("/docs/operations.md"), "the base names the document the anchors are in"


@pytest.mark.parametrize("rule", RULES, ids=ALERT_IDS)
def test_runbook_link_points_at_an_existing_section(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    base, _, anchor = url.partition("#")
    assert base == GENERATOR.RUNBOOK_BASE, "every runbook_url is built from the one configured base"
    assert anchor in _anchors((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))
    assert anchor == rule["alert"].lower(), "one runbook section per alert, named after it"


def test_generated_monitoring_files_are_up_to_date() -> None:
    """alerts.yml is the one source: runbook URLs, the promtool expectations and the
    PrometheusRule are derived by deploy/generate_monitoring.py and must match its output."""
    stale = [
        str(path.relative_to(ROOT))
        for path, text in GENERATOR.expected_files().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run python deploy/generate_monitoring.py: {stale}"


def test_prometheus_rule_carries_exactly_the_rules_of_alerts_yml() -> None:
    rule = _load(ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == _load(PROMETHEUS / "alerts.yml")["groups"]


def test_generator_rebases_every_runbook_url() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    rebased = yaml.safe_load(GENERATOR.with_rule_runbooks(text, "https://docs.example.net/ops.md"))
    urls = {r["alert"]: r["annotations"]["runbook_url"] for g in rebased["groups"] for r in g["rules"]}
    assert urls == {name: f"https://docs.example.net/ops.md#{name.lower()}" for name in ALERT_IDS}
    tests = (ROOT / "tests" / "unit" / "deploy" / "promtool" / "alerts_test.yml").read_text(encoding="utf-8")
    assert GENERATOR.RUNBOOK_BASE in tests
    assert GENERATOR.RUNBOOK_BASE not in GENERATOR.with_test_runbooks(tests, "https://docs.example.net/ops.md")


def _histogram_bounds(family: str) -> list[float]:
    from processor import metrics

    (collector,) = [getattr(metrics, a) for a in metrics.__all__ if getattr(metrics, a)._name == family]  # noqa: SLF001
    return [b for b in collector._upper_bounds if b != float("inf")]  # noqa: SLF001


@pytest.mark.parametrize("rule", RULES, ids=ALERT_IDS)
def test_quantile_thresholds_are_below_the_largest_bucket(rule: dict[str, Any]) -> None:
    """histogram_quantile() answers at most the largest finite bucket: a threshold at or above
    it can never be crossed (HL7EndToEndLatencyHigh once tested > 30 with 30 s as the top)."""
    expr = " ".join(rule["expr"].split())
    for family, threshold in re.findall(
        r"histogram_quantile\(.*?\b(hl7_\w+)_bucket\b.*?\)\)\)\s*>\s*([0-9.]+)", expr
    ):
        assert float(threshold) < max(_histogram_bounds(family)) / 10, (family, threshold)


def test_alert_names_are_unique() -> None:
    assert len(set(ALERT_IDS)) == len(ALERT_IDS)


def test_the_required_conditions_are_alerted_on(names_in: Callable[[str], set[str]]) -> None:
    exprs = [rule["expr"] for rule in RULES]

    def covered(metric: str, fragment: str = "") -> bool:
        return any(metric in names_in(expr) and fragment in expr for expr in exprs)

    assert covered("hl7_processor_records_total", 'outcome="deadletter"'), "dead-letter surge"
    assert covered("hl7_processor_consumer_lag"), "lag growth"
    assert covered("hl7_edge_requests_total", 'status="503", ack=~"AE|CE"'), "edge storage failures (not bare 503s)"
    assert covered("hl7_registry_file_loaded", "== 0"), "registry reload failures, held while the bad file stays"
    assert covered("hl7_edge_auth_failures_total", 'reason!="missing_credentials"'), "auth failure spike"
    assert covered("hl7_processor_end_to_end_seconds_bucket", "> 30"), "end-to-end latency"


def test_promql_checker_rejects_what_the_app_cannot_expose(check_promql: Callable[[str], list[str]]) -> None:
    # The checker itself: a renamed metric, a missing label and an impossible value are caught.
    assert check_promql("rate(hl7_edge_request_total[5m])")
    assert check_promql('hl7_processor_records_total{outcome="dead_letter"}')
    assert check_promql('hl7_processor_records_total{reason="NOT_A_REASON"}')
    assert check_promql("sum by (partition) (rate(hl7_edge_requests_total[5m]))")
    assert check_promql("histogram_quantile(0.9, rate(hl7_edge_publish_duration_seconds[5m]))")
    assert not check_promql(
        "histogram_quantile(0.9, sum by (le) (rate(hl7_edge_publish_duration_seconds_bucket[5m])))"
    )
