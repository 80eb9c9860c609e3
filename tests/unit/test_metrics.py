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
