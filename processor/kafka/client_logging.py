"""librdkafka's log lines through Python logging, without floods.

While a broker is unreachable librdkafka logs a connect failure per attempt and per
client, many lines a second. Every client the gateway builds hands its log lines to
one logger whose filter lets one line of a kind through per window and reports how
many were held back, so an outage stays readable and the disk stays free.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

__all__ = ["RepeatFilter", "librdkafka_logger"]

_NUMBERS = re.compile(r"\d+")
_MAX_KINDS = 1000


class RepeatFilter(logging.Filter):
    """Pass the first record of a kind (same level, same text up to numbers) per window."""

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[int, str], list[float]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = (record.levelno, _NUMBERS.sub("#", message))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self._window_s:
                seen[1] += 1
                return False
            held_back = int(seen[1]) if seen is not None else 0
            if len(self._seen) >= _MAX_KINDS:
                self._seen.clear()
            self._seen[key] = [now, 0]
        if held_back:
            record.msg = (
                f"{message} ({held_back} similar line(s) held back in the last {self._window_s:.0f} s)"
            )
            record.args = ()
        return True


_logger = logging.getLogger("processor.librdkafka")
_logger.addFilter(RepeatFilter())


def librdkafka_logger() -> logging.Logger:
    """The logger every librdkafka client of the gateway logs to (pass as ``"logger"``)."""
    return _logger
