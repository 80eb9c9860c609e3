"""Hot reload of the registry file without a restart (SPEC section 3).

A daemon thread polls the file every ``interval_s``: a cheap ``stat`` first
(mtime, size, inode, device), and only when that changed, a read + SHA-256. A
new version is validated in full and swapped in with one reference assignment,
so readers (``watcher.current``) always see one complete, valid registry.

Refusals: a file that fails to read or validate is refused, the old registry is
kept, the error is logged (entry and field names only, never hashes) and counted
as ``hl7_registry_reloads_total{result="error"}``, and ``hl7_registry_file_loaded``
drops to 0 for as long as the file on disk is not the one in force (back to 1 when
a valid file is loaded or the file in force is put back), so an alert on it holds
while the bad file stays. The refused content is
remembered by hash, so it is not re-reported every poll, and any further change
to the file is tried again. That is also what protects against half-written
files: a truncated file fails to parse or validate (both top-level keys are
required) and the completed file, whose hash differs, is loaded at the next
poll. Writers should still replace the file atomically (write a temporary file
in the same directory, then ``rename`` it over the registry), because a
truncation that happens to be valid YAML cannot be told apart from an
intentional edit. As an extra guard the watcher only loads a changed file once
its ``stat`` has been the same on two consecutive polls (``settle=True``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from processor.errors import RegistryInvalid
from processor.metrics import REGISTRY_FILE_LOADED, REGISTRY_INFO, REGISTRY_LAST_SUCCESS, REGISTRY_RELOADS
from processor.registry.loader import parse_registry
from processor.registry.model import Registry

__all__ = ["RegistryWatcher"]

log = logging.getLogger(__name__)

_Stat = tuple[int, int, int, int]


def _stat(path: Path) -> _Stat:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class RegistryWatcher:
    """Holds the current :class:`Registry` and swaps it when the file changes.

    The constructor loads the file once and raises :class:`RegistryInvalid` if it
    is unusable: a process must not start without a valid registry.
    """

    def __init__(
        self,
        path: str | Path,
        interval_s: float = 2.0,
        *,
        settle: bool = True,
        full_check_every: int = 30,
    ) -> None:
        self._path = Path(path)
        self._interval_s = interval_s
        self._settle = settle
        self._full_check_every = max(1, full_check_every)
        self._callbacks: list[Callable[[Registry], None]] = []
        self._lock = threading.Lock()  # serialises polls (thread vs. poll_now())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0
        self._pending_stat: _Stat | None = None
        self._refused_digest: str | None = None
        self._last_io_error: str | None = None

        try:
            stat = _stat(self._path)
            data = self._path.read_bytes()
        except OSError as exc:
            REGISTRY_RELOADS.labels(result="error").inc()
            raise RegistryInvalid(
                f"registry file {str(self._path)!r} unreadable: {exc.strerror or type(exc).__name__}"
            ) from None
        try:
            registry = parse_registry(data)
        except RegistryInvalid:
            REGISTRY_RELOADS.labels(result="error").inc()
            raise
        self._current = registry
        self._digest = hashlib.sha256(data).hexdigest()
        self._seen_stat: _Stat = stat
        REGISTRY_RELOADS.labels(result="ok").inc()
        REGISTRY_INFO.labels(version=registry.version).set(1)
        REGISTRY_FILE_LOADED.set(1)
        REGISTRY_LAST_SUCCESS.set_to_current_time()
        log.info("registry %s loaded from %s", registry.version, self._path)

    # --- readers -------------------------------------------------------------------
    @property
    def current(self) -> Registry:
        """The registry in force (an atomic reference read; safe from any thread)."""
        return self._current

    @property
    def path(self) -> Path:
        return self._path

    def subscribe(self, callback: Callable[[Registry], None]) -> None:
        """Call ``callback(new_registry)`` after every successful swap (on the watcher thread)."""
        self._callbacks.append(callback)

    # --- thread --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> RegistryWatcher:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.poll_now()
            except Exception:  # the watcher thread must survive anything (logged with its traceback)
                log.exception("registry watcher poll failed")

    # --- one poll ------------------------------------------------------------------
    def poll_now(self) -> bool:
        """Check the file once; True when a new registry was swapped in."""
        with self._lock:
            self._polls += 1
            try:
                stat = _stat(self._path)
            except OSError as exc:
                self._io_error(exc)
                return False
            full_check = self._polls % self._full_check_every == 0
            if stat == self._seen_stat and not full_check:
                self._pending_stat = None
                return False
            if stat != self._seen_stat and self._settle and stat != self._pending_stat:
                self._pending_stat = stat  # changed since last poll: wait until it holds still
                return False
            self._pending_stat = None
            try:
                data = self._path.read_bytes()
                after = _stat(self._path)
            except OSError as exc:
                self._io_error(exc)
                return False
            if after != stat:
                return False  # written while we read it; next poll tries again
            self._last_io_error = None
            self._seen_stat = stat
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._digest:
                REGISTRY_FILE_LOADED.set(1)  # e.g. the version in force was put back after a refusal
                return False
            if digest == self._refused_digest:
                REGISTRY_FILE_LOADED.set(0)  # still (or again) the refused file: not re-counted
                return False
            try:
                registry = parse_registry(data)
            except RegistryInvalid as exc:
                self._refused_digest = digest
                REGISTRY_RELOADS.labels(result="error").inc()
                REGISTRY_FILE_LOADED.set(0)
                log.error(
                    "registry file %s refused (version %s), keeping %s: %s",
                    self._path,
                    digest[:12],
                    self._current.version,
                    exc,
                )
                return False
            self._swap(registry, digest)
            return True

    def _io_error(self, exc: OSError) -> None:
        text = exc.strerror or type(exc).__name__
        REGISTRY_FILE_LOADED.set(0)
        if text != self._last_io_error:  # count and log once per distinct failure
            self._last_io_error = text
            REGISTRY_RELOADS.labels(result="error").inc()
            log.error("registry file %s unreadable (%s), keeping %s", self._path, text, self._current.version)
        self._seen_stat = (-1, -1, -1, -1)  # re-read once the file is back

    def _swap(self, registry: Registry, digest: str) -> None:
        old = self._current
        self._current = registry
        self._digest = digest
        self._refused_digest = None
        REGISTRY_RELOADS.labels(result="ok").inc()
        if old.version != registry.version:
            try:
                REGISTRY_INFO.remove(old.version)
            except KeyError:
                pass
        REGISTRY_INFO.labels(version=registry.version).set(1)
        REGISTRY_FILE_LOADED.set(1)
        REGISTRY_LAST_SUCCESS.set_to_current_time()
        log.info("registry %s loaded from %s (was %s)", registry.version, self._path, old.version)
        for callback in list(self._callbacks):
            try:
                callback(registry)
            except Exception:  # a subscriber must not stop reloads (logged with its traceback)
                log.exception("registry subscriber failed")
