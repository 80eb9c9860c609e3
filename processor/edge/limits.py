"""Connection-level limits the edge enforces itself, with no proxy in front.

uvicorn's HTTP protocols have a keep-alive timer that only starts after a response,
and no limit on the request head: a client that sends half a request line, or
nothing, holds its connection forever, and httptools concatenates a long header
value chunk by chunk (quadratic CPU: 2.6 s for a 4 MiB value). So the edge runs
uvicorn's httptools protocol (the fastest it has) under this subclass, which adds:

* a **head timeout**: request line and headers must arrive within
  ``header_timeout`` of the connection opening, or of the first byte of a later
  request on a kept-alive connection (nginx ``client_header_timeout``; Kestrel
  ``RequestHeadersTimeout``) - else the connection is closed;
* **head size and count limits**: bytes of request line + headers are counted
  *before* httptools sees them, and header lines as httptools reports them; over
  either limit the answer is 431 and the connection is closed (nginx
  ``large_client_header_buffers`` 4 x 8k = 32 KiB, Envoy ``max_headers_count`` 100);
* a **minimum body rate**: after a grace period the body must have arrived at
  ``body_min_rate`` bytes/s on average, not counting time in which the edge
  itself paused reading (Kestrel ``MinRequestBodyDataRate``: 240 B/s, 5 s grace)
  - else the connection is closed;
* a **connection cap**: beyond ``max_connections`` open connections a new one
  gets 503 with ``Retry-After`` and is closed before anything is read.

The keep-alive idle limit is uvicorn's own ``timeout_keep_alive``. Requests in
progress and buffered body bytes are capped in the app (``processor.edge.app``),
where the request's route is known.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from processor.metrics import EDGE_LIMIT_REFUSALS, EDGE_OPEN_CONNECTIONS

__all__ = ["ConnectionLimits", "guarded_protocol", "RETRY_AFTER_BUSY"]

RETRY_AFTER_BUSY = "5"
_END_OF_HEAD = b"\r\n\r\n"
_RATE_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float
    body_min_rate: int
    body_rate_grace: float
    max_header_count: int
    max_header_bytes: int
    max_connections: int


def _plain_response(status: bytes, body: bytes, *extra: bytes) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: text/plain; charset=utf-8\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\n",
            *extra,
            b"connection: close\r\n\r\n",
            body,
        )
    )


_TOO_MANY_CONNECTIONS = _plain_response(
    b"503 Service Unavailable",
    b"Too many connections, retry later\n",
    b"retry-after: " + RETRY_AFTER_BUSY.encode() + b"\r\n",
)
_HEADERS_TOO_LARGE = _plain_response(
    b"431 Request Header Fields Too Large", b"Request header fields too large\n"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (``limits`` set by ``guarded_protocol``)."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between the start of a request and its headers' end
        self._head_bytes = 0
        self._head_tail = b""  # last bytes of the head so far: "\r\n\r\n" may straddle reads
        self._header_count = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0
        self._body_active_s = 0.0  # body time not spent with reading paused by us
        self._body_tick = 0.0

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own
        super().connection_made(transport)
        EDGE_OPEN_CONNECTIONS.inc()
        if len(self.connections) > self.limits.max_connections:
            EDGE_LIMIT_REFUSALS.labels("connections").inc()
            self._refuse(_TOO_MANY_CONNECTIONS)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        EDGE_OPEN_CONNECTIONS.dec()
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_timer is None:  # first bytes after an idle keep-alive period
                self._arm_head_timer()
            if self._head_too_large(data):
                EDGE_LIMIT_REFUSALS.labels("header_bytes").inc()
                self._refuse(_HEADERS_TOO_LARGE)
                return
        super().data_received(data)

    # -- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        if self._head_timer is None:
            self._arm_head_timer()
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count <= self.limits.max_header_count:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._head_tail = b""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._header_count > self.limits.max_header_count:
            EDGE_LIMIT_REFUSALS.labels("header_count").inc()
            self._refuse(_HEADERS_TOO_LARGE)
            return
        self._header_count = 0
        self._body_bytes = 0
        self._body_active_s = 0.0
        self._body_tick = self.loop.time()
        self._rate_timer = self.loop.call_later(_RATE_CHECK_S, self._check_body_rate)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        if self._refused:
            return
        self._in_head = True  # the next bytes on this connection start a new request
        super().on_message_complete()

    # -- limits ------------------------------------------------------------------------------
    def _head_too_large(self, data: bytes) -> bool:
        """Count this read's head bytes (up to the end of the head, if it is in here)."""
        # Look where "\r\n\r\n" may straddle the previous read, then in this read: never
        # copy the read itself (it may carry up to 256 KiB of body after the head).
        keep = len(_END_OF_HEAD) - 1
        tail = self._head_tail
        end = (tail + data[:keep]).find(_END_OF_HEAD) if tail else -1
        if end < 0:
            found = data.find(_END_OF_HEAD)
            end = found + len(tail) if found >= 0 else -1
        if end >= 0:
            head_part = end + len(_END_OF_HEAD) - len(tail)
        else:
            head_part = len(data)
            self._head_tail = (tail + data[-keep:])[-keep:]
        self._head_bytes += head_part
        return self._head_bytes > self.limits.max_header_bytes

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            EDGE_LIMIT_REFUSALS.labels("header_timeout").inc()
            self._refuse(b"")

    def _check_body_rate(self) -> None:
        self._rate_timer = None
        if self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        if not self.flow.read_paused:  # time we paused reading is not the client's fault
            self._body_active_s += now - self._body_tick
        self._body_tick = now
        excess = self._body_active_s - self.limits.body_rate_grace
        if excess > 0 and self._body_bytes < self.limits.body_min_rate * self._body_active_s:
            EDGE_LIMIT_REFUSALS.labels("body_rate").inc()
            self._refuse(b"")
            return
        self._rate_timer = self.loop.call_later(_RATE_CHECK_S, self._check_body_rate)

    def _refuse(self, response: bytes) -> None:
        """Answer (if there is anything to say) and close; later bytes are ignored."""
        self._refused = True
        self._cancel_timers()
        if response and not self.transport.is_closing():
            self.transport.write(response)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._rate_timer = None


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
