"""SIGINT/SIGTERM handling that cannot deadlock: the one way commands handle signals.

A Python signal handler runs in the main thread between bytecodes, possibly while
that thread holds the very lock the handler needs: ``Event.set()`` from a handler
that interrupted ``Event.wait()`` deadlocks on the event's condition. So the
handler only starts a thread, and the callback runs there. Every command that stops
on a signal (``stream``, ``run``, ``kafka``) goes through :func:`on_shutdown_signal`;
the edge's uvicorn installs its own.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

__all__ = ["on_shutdown_signal"]

log = logging.getLogger(__name__)


def on_shutdown_signal(callback: Callable[[], None]) -> None:
    """Run ``callback`` on a new thread when SIGINT or SIGTERM arrives (main thread only)."""

    def run(signum: int) -> None:
        log.info("signal %s received: shutting down", signal.Signals(signum).name)
        callback()

    def handler(signum: int, _frame: object) -> None:
        threading.Thread(target=run, args=(signum,), name=f"signal-{signum}", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
