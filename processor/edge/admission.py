"""Request admission: how much work the edge takes on at once, and reading bodies within it.

Two budgets, both answered with 503 + ``Retry-After`` before any work when exhausted:

* **requests in progress** on ``/hl7`` and ``/soap`` (each may hold a body, an
  argon2 check and a Kafka delivery wait);
* **buffered body bytes** across all requests: a body's declared length (or, when
  chunked, each chunk as it arrives) is reserved before it is read. With the
  request-in-progress cap alone, 128 partners each sending 10 MiB would need
  gigabytes; this budget keeps the edge within its memory limit whatever the mix.

Single-threaded by design: every call happens on the edge's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from processor.errors import BadLength, BodyTooLarge, OverBudget

# The exceptions live in processor.errors; re-exported here, where read_body raises them.
__all__ = ["Admission", "BodyTooLarge", "BadLength", "OverBudget", "read_body"]


@dataclass(slots=True)
class Admission:
    max_in_progress: int
    max_body_bytes_held: int
    in_progress: int = 0
    body_bytes_held: int = 0

    def try_enter(self) -> bool:
        if self.in_progress >= self.max_in_progress:
            return False
        self.in_progress += 1
        return True

    def leave(self) -> None:
        self.in_progress -= 1

    def reserve(self, n: int) -> bool:
        if n > 0 and self.body_bytes_held + n > self.max_body_bytes_held:
            return False
        self.body_bytes_held += n
        return True

    def release(self, n: int) -> None:
        self.body_bytes_held -= n


async def read_body(
    chunks: AsyncIterator[bytes], declared: str | None, limit: int, admission: Admission, held: list[int]
) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes without buffering it.

    Bytes are reserved from ``admission`` before they are kept; ``held[0]`` tells the
    caller how much to release when the request ends (also on error).
    """
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadLength from None
        if length < 0:
            raise BadLength
        if length > limit:
            raise BodyTooLarge
        if not admission.reserve(length):
            raise OverBudget
        held[0] += length
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge
        if total > held[0]:  # chunked, or more than declared (h11/httptools refuse that)
            if not admission.reserve(total - held[0]):
                raise OverBudget
            held[0] = total
        parts.append(chunk)
    return b"".join(parts)
