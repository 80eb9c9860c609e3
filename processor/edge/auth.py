"""HTTP Basic credentials and the failed-login rate limiter (pure, injectable clock).

The limiter is consulted BEFORE the password hash is checked, so a brute-force
client is turned away with 429 without costing an argon2 computation. Failures
are counted per source address and per username in a sliding window; reaching
the limit locks that key out for a fixed time. Memory is bounded: the least
recently touched keys are dropped beyond ``max_keys`` (an attacker spraying
random usernames cannot grow the table without bound).
"""

from __future__ import annotations

import binascii
import math
import threading
import time
from base64 import b64decode
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BasicCredentials", "parse_basic", "LoginRateLimiter", "WWW_AUTHENTICATE"]

WWW_AUTHENTICATE = 'Basic realm="HL7 API"'

# A sane Authorization header is far below this; longer ones are refused before decoding.
_MAX_HEADER_CHARS = 4096


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password by accident
        return f"BasicCredentials(username=<{len(self.username)} chars>, password=<hidden>)"


def parse_basic(header: str | None) -> BasicCredentials | None:
    """Credentials from an ``Authorization: Basic ...`` value, or ``None`` if absent/unusable.

    RFC 7617: the scheme is case-insensitive, user-pass is UTF-8 (ISO-8859-1 accepted
    as a fallback for old clients), the user-id ends at the first colon.
    """
    if not header or len(header) > _MAX_HEADER_CHARS:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    token = token.strip()
    if not token:
        return None
    try:
        raw = b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    username, sep, password = text.partition(":")
    if not sep or not username:
        return None
    return BasicCredentials(username, password)


class _Window:
    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.locked_until = 0.0


USERNAME_LIMIT_FACTOR = 5


class LoginRateLimiter:
    """Sliding-window failed-login counter with lockout, keyed by address and username.

    An address is locked after ``failures_per_window`` failures; a username only after
    ``USERNAME_LIMIT_FACTOR`` times as many (from any addresses). So one client locks
    itself out long before it could lock a partner's account, and stopping a
    partner's feed takes a distributed attack, while a slow distributed guess at one
    username is still capped. Thread-safe (one lock; every operation is O(limit)).
    """

    def __init__(
        self,
        failures_per_window: int,
        lockout_seconds: float,
        *,
        window_seconds: float = 60.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = max(1, failures_per_window)
        self._lockout = max(0.0, lockout_seconds)
        self._window = window_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def _keys_for(self, address: str | None, username: str | None) -> list[tuple[str, int]]:
        keys = []
        if address:
            keys.append(("a:" + address, self._limit))
        if username:
            keys.append(("u:" + username, self._limit * USERNAME_LIMIT_FACTOR))
        return keys

    def retry_after(self, address: str | None, username: str | None) -> int | None:
        """Whole seconds until this address/username may try again, or ``None`` if allowed now."""
        now = self._clock()
        worst = 0.0
        with self._lock:
            for key, _limit in self._keys_for(address, username):
                window = self._keys.get(key)
                if window is not None and window.locked_until > now:
                    worst = max(worst, window.locked_until - now)
        return max(1, math.ceil(worst)) if worst > 0 else None

    def record_failure(self, address: str | None, username: str | None) -> None:
        now = self._clock()
        with self._lock:
            for key, limit in self._keys_for(address, username):
                window = self._keys.get(key)
                if window is None:
                    window = self._keys[key] = _Window()
                    self._evict()
                else:
                    self._keys.move_to_end(key)
                window.failures.append(now)
                while window.failures and window.failures[0] <= now - self._window:
                    window.failures.popleft()
                if len(window.failures) >= limit:
                    window.locked_until = now + self._lockout
                    window.failures.clear()

    def record_success(self, username: str | None) -> None:
        """A good login clears that username's failures (never the address's)."""
        if not username:
            return
        with self._lock:
            window = self._keys.get("u:" + username)
            if window is not None and window.locked_until <= self._clock():
                del self._keys["u:" + username]

    def _evict(self) -> None:
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)
