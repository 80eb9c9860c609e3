"""Metrics every process exposes from import time on."""

from __future__ import annotations

from prometheus_client import REGISTRY

import processor.metrics  # noqa: F401 - defines the metrics
from processor import __version__


def test_build_info_carries_the_package_version() -> None:
    assert REGISTRY.get_sample_value("hl7_gateway_build_info", {"version": __version__}) == 1.0


def test_series_watched_by_increase_alerts_start_at_zero() -> None:
    """HL7RegistryReloadFailed / HL7TransactionsAborting use increase()/rate(): the series
    must exist before the first event, or that event is invisible to them."""
    for name, result in (("hl7_registry_reloads_total", "error"), ("hl7_registry_reloads_total", "ok"),
                         ("hl7_processor_transactions_total", "aborted"),
                         ("hl7_processor_transactions_total", "committed")):
        assert REGISTRY.get_sample_value(name, {"result": result}) is not None, (name, result)


def _upper_bounds(metric: object) -> list[float]:
    return list(metric._upper_bounds)  # noqa: SLF001 - prometheus_client keeps no public accessor


def test_end_to_end_buckets_reach_an_hour() -> None:
    """histogram_quantile() never answers above the largest finite bucket: with 30 s as the top,
    HL7EndToEndLatencyHigh (p99 > 30 s) could never fire, and a backlog of hours looked like 30 s."""
    from processor.metrics import EDGE_REQUEST_DURATION, PROCESSOR_END_TO_END

    end_to_end = [b for b in _upper_bounds(PROCESSOR_END_TO_END) if b != float("inf")]
    assert end_to_end == sorted(end_to_end)
    assert max(end_to_end) >= 3600
    assert {60, 300, 1800} <= set(end_to_end), "resolution between 30 s and an hour"
    request = [b for b in _upper_bounds(EDGE_REQUEST_DURATION) if b != float("inf")]
    assert max(request) >= 300, "slow uploads of big documents take minutes"


def test_registry_state_gauges_are_exposed() -> None:
    """hl7_registry_file_loaded drives HL7RegistryReloadFailed; both gauges exist from import on."""
    assert REGISTRY.get_sample_value("hl7_registry_file_loaded") is not None
    assert REGISTRY.get_sample_value("hl7_registry_last_success_timestamp_seconds") is not None
