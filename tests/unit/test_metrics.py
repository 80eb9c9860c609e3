"""Metrics every process exposes from import time on."""

from __future__ import annotations

from prometheus_client import REGISTRY

import processor.metrics  # noqa: F401 - defines the metrics
from processor import __version__


def test_build_info_carries_the_package_version() -> None:
    assert REGISTRY.get_sample_value("hl7_gateway_build_info", {"version": __version__}) == 1.0
