"""Request admission: in-progress slots, the body-bytes budget and bounded body reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from processor.edge.admission import Admission, BadLength, BodyTooLarge, OverBudget, read_body


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _read(parts: tuple[bytes, ...], declared: str | None, limit: int, admission: Admission) -> tuple[bytes, int]:
    held = [0]
    body = asyncio.run(read_body(_chunks(*parts), declared, limit, admission, held))
    return body, held[0]


def test_slots_are_capped_and_given_back() -> None:
    admission = Admission(max_in_progress=2, max_body_bytes_held=100)
    assert admission.try_enter() and admission.try_enter()
    assert not admission.try_enter()
    admission.leave()
    assert admission.try_enter()


def test_declared_length_is_reserved_before_reading() -> None:
    admission = Admission(max_in_progress=4, max_body_bytes_held=10)
    body, held = _read((b"abc", b"def"), "6", 100, admission)
    assert (body, held, admission.body_bytes_held) == (b"abcdef", 6, 6)
    with pytest.raises(OverBudget):
        _read((b"12345",), "5", 100, admission)  # 6 + 5 > 10
    admission.release(6)
    assert _read((b"12345",), "5", 100, admission)[0] == b"12345"


def test_chunked_body_reserves_as_it_grows() -> None:
    admission = Admission(max_in_progress=4, max_body_bytes_held=5)
    held = [0]

    async def run() -> bytes:
        return await read_body(_chunks(b"abc", b"def"), None, 100, admission, held)

    with pytest.raises(OverBudget):
        asyncio.run(run())
    assert held[0] == 3  # what the caller must release
    admission.release(held[0])
    assert admission.body_bytes_held == 0


@pytest.mark.parametrize("declared", ["-1", "12x", ""])
def test_bad_content_length(declared: str) -> None:
    with pytest.raises(BadLength):
        _read((b"",), declared, 100, Admission(1, 100))


def test_over_the_body_limit_declared_or_not() -> None:
    with pytest.raises(BodyTooLarge):
        _read((b"x" * 11,), "11", 10, Admission(1, 100))
    admission = Admission(1, 100)
    held = [0]
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(_chunks(b"x" * 6, b"x" * 6), None, 10, admission, held))
    assert held[0] == 6  # the first chunk was reserved; the caller releases it
