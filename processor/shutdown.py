"""SIGINT/SIGTERM handling that cannot deadlock.

A Python signal handler runs in the main thread between bytecodes, possibly while
that thread holds the very lock the handler needs: ``Event.set()`` from a handler
that interrupted ``Event.wait()`` deadlocks on the event's condition. So the
handler only starts a thread, and the callback runs there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

__all__ = ["on_shutdown_signal"]


def on_shutdown_signal(callback: Callable[[], None]) -> None:
    """Run ``callback`` on a new thread when SIGINT or SIGTERM arrives (main thread only)."""

    def handler(signum: int, _frame: object) -> None:
        threading.Thread(target=callback, name=f"signal-{signum}", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
