"""librdkafka log lines: one of a kind per window, with a count of what was held back."""

from __future__ import annotations

import logging

from processor.kafka.client_logging import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("processor.librdkafka", level, __file__, 1, msg, (), None)


def test_connect_failure_flood_is_one_line_per_window_with_a_count() -> None:
    clock = Clock()
    flt = RepeatFilter(window_s=30, clock=clock)
    line = "FAIL [thrd:127.0.0.1:1/bootstrap]: Connect failed: Connection refused (after {}ms in state CONNECT)"
    passed = [flt.filter(_record(line.format(i))) for i in range(120)]
    assert passed.count(True) == 1 and passed[0]
    clock.now = 31
    later = _record(line.format(999))
    assert flt.filter(later)
    assert "119 similar line(s) held back" in later.getMessage()


def test_different_messages_and_levels_pass() -> None:
    flt = RepeatFilter(window_s=30, clock=Clock())
    assert flt.filter(_record("broker down"))
    assert flt.filter(_record("broker down", logging.WARNING))
    assert flt.filter(_record("topic missing"))
    assert not flt.filter(_record("topic missing"))
