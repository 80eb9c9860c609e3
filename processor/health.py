"""Liveness and readiness for any gateway process (edge, processor, ``run``).

Readiness answers "can this process do its job right now?" from cheap, cached
facts. Checks that need I/O (asking Kafka for metadata) run on a background
thread at a fixed interval (``PeriodicCheck``), never on the request path, so a
probe storm cannot load the broker and ``/readyz`` answers in microseconds.
Framework-free on purpose: the edge serves it with Starlette, the processor
can serve it with any HTTP server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Readiness", "PeriodicCheck", "render_status"]

log = logging.getLogger(__name__)


class Readiness:
    """Named boolean checks; ready when every one of them passes."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}

    def add(self, name: str, check: Callable[[], bool]) -> None:
        """Register (or replace) a check; it must be cheap and must not raise."""
        self._checks[name] = check

    def status(self) -> tuple[bool, dict[str, bool]]:
        results: dict[str, bool] = {}
        for name, check in self._checks.items():
            try:
                results[name] = bool(check())
            except Exception:  # a broken check means "not ready", never a 500
                log.exception("readiness check %s raised", name)
                results[name] = False
        return all(results.values()), results


def render_status(
    ready: bool, checks: dict[str, bool], info: dict[str, bool] | None = None
) -> tuple[int, bytes]:
    """HTTP status and a small JSON body for a readiness answer; ``info`` is reported
    but does not decide readiness (e.g. the edge's Kafka reachability, SPEC 4)."""
    doc: dict[str, object] = {"ready": ready, "checks": checks}
    if info is not None:
        doc["info"] = info
    return (200 if ready else 503), json.dumps(doc, sort_keys=True).encode()


class PeriodicCheck:
    """Runs a blocking probe on a daemon thread every ``interval`` seconds.

    ``ok`` is true while the last probe succeeded and is younger than
    ``max_age`` (so a probe thread that hangs turns readiness off by itself).
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[], bool],
        *,
        interval: float = 2.0,
        max_age: float | None = None,
    ) -> None:
        self.name = name
        self._probe = probe
        self._interval = interval
        self._max_age = max_age if max_age is not None else max(3 * interval, 5.0)
        self._last_ok: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ok(self) -> bool:
        last = self._last_ok
        return last is not None and time.monotonic() - last <= self._max_age

    def run_once(self) -> bool:
        try:
            good = bool(self._probe())
        except Exception as exc:  # noqa: BLE001 - any probe failure means "not ok" (expected when a dependency is down)
            log.debug("check %s failed: %s", self.name, type(exc).__name__)
            good = False
        self._last_ok = time.monotonic() if good else None
        return good

    def poke(self) -> None:
        """Re-run the probe soon (e.g. after a delivery failure)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"check-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self._interval)
            self._wake.clear()
