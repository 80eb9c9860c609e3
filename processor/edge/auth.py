"""HTTP Basic credentials and the failed-login rate limiter (pure, injectable clock).

The limiter is consulted BEFORE the password hash is checked, so a brute-force
client is turned away with 429 without costing an argon2 computation. An attempt
is counted as a failure when it starts (a success takes it back), per source (an
IPv4 address, or an IPv6 /64) and per username in a sliding window; reaching the
limit locks that key out for a fixed time. A source that recently signed in as a
username is exempt from that username's lock, so an attack on a partner's
username does not stop the partner. Memory is bounded: the least recently touched
keys are dropped beyond ``max_keys`` (an attacker spraying random usernames cannot
grow the table without bound), and likewise the known (username, source) pairs.
"""

from __future__ import annotations

import binascii
import itertools
import math
import threading
import time
from base64 import b64decode
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from processor.registry.networks import parse_address

__all__ = [
    "BasicCredentials",
    "parse_basic",
    "source_key",
    "LoginAttempt",
    "LoginRateLimiter",
    "USERNAME_LIMIT_FACTOR",
    "WWW_AUTHENTICATE",
]

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


def source_key(address: str | None) -> str:
    """The key an address's failed logins are counted under.

    An IPv4 address counts as itself; an IPv6 address as its /64, because one host
    or subscriber is normally given a whole /64 and can pick a fresh address in it
    for every request (counting each address alone gave such a client unlimited
    guesses). An IPv4-mapped IPv6 address (``::ffff:192.0.2.7``, what dual-stack
    sockets report) counts as the IPv4 address it carries. Anything that is not an
    address (an empty peer, a Unix socket name) is its own key, exactly as written.
    """
    if not address:
        return ""
    addr = parse_address(address)
    if addr is None:
        return address
    if isinstance(addr, IPv6Address):
        return str(IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


class _Window:
    """One key's attempts in the sliding window, plus its lock-out.

    ``entries`` holds, oldest first, every attempt still counted: failures and
    attempts still being checked (``open``; an attempt counts from the moment it
    starts). A success removes its entry, a failure keeps it. ``joinable`` maps a
    guess token to the open attempt trying it (see :meth:`LoginRateLimiter.try_begin`).
    """

    __slots__ = ("entries", "open", "joinable", "locked_until")

    def __init__(self) -> None:
        self.entries: OrderedDict[int, float] = OrderedDict()  # attempt id -> start time
        self.open: dict[int, _Open] = {}
        self.joinable: dict[bytes, int] = {}  # guess token -> open attempt id
        self.locked_until = 0.0

    def prune(self, cutoff: float) -> None:
        """Forget attempts that started at or before ``cutoff`` (out of the window)."""
        entries = self.entries
        while entries:
            attempt_id, started = next(iter(entries.items()))
            if started > cutoff:
                break
            del entries[attempt_id]
            self._close(attempt_id)

    def add(self, attempt_id: int, now: float, guess: bytes | None) -> None:
        self.entries[attempt_id] = now
        self.open[attempt_id] = _Open(guess)
        if guess is not None:
            self.joinable[guess] = attempt_id

    def remove(self, attempt_id: int) -> None:
        self.entries.pop(attempt_id, None)
        self._close(attempt_id)

    def confirm(self, attempt_id: int) -> None:
        """The attempt failed: it stays counted, no longer open or joinable."""
        self._close(attempt_id)

    def failures(self) -> int:
        return len(self.entries) - len(self.open)

    def lock(self, until: float) -> None:
        """Lock out until ``until``; the failures that caused it are spent (a fresh
        window follows the lock-out), attempts still open keep counting."""
        self.locked_until = until
        self.entries = OrderedDict((i, t) for i, t in self.entries.items() if i in self.open)

    def _close(self, attempt_id: int) -> None:
        opened = self.open.pop(attempt_id, None)
        if opened is not None and opened.guess is not None:
            if self.joinable.get(opened.guess) == attempt_id:
                del self.joinable[opened.guess]


class _Open:
    __slots__ = ("guess", "holders")

    def __init__(self, guess: bytes | None) -> None:
        self.guess = guess
        self.holders = 1  # LoginAttempt handles sharing this entry (joined guesses)


USERNAME_LIMIT_FACTOR = 5

_BUSY_WAIT = 1
"""Retry-After when a key is full only because attempts are still being checked:
they end within about an argon2 run, so the client may retry almost at once."""

_SUCCEEDED, _FAILED, _CANCELLED = "succeeded", "failed", "cancelled"


class LoginAttempt:
    """One admitted login attempt, already counted as a failure until told otherwise.

    Call exactly one of :meth:`succeeded` (the password was right: the attempt stops
    counting and the source becomes known for this username), :meth:`failed` (it
    stays counted) or :meth:`cancelled` (the password was never checked, e.g. the
    argon2 queue was full: the attempt is forgotten). Later calls do nothing; a
    handle dropped without any call stays counted, as a failure would, so a crash
    between check and verdict cannot hand out free guesses.
    """

    __slots__ = ("_limiter", "_holds", "_username", "_source", "_done")

    def __init__(
        self,
        limiter: LoginRateLimiter,
        holds: tuple[tuple[str, int, int], ...],
        username: str | None,
        source: str,
    ) -> None:
        self._limiter = limiter
        self._holds = holds  # (window key, attempt id, that key's limit)
        self._username = username
        self._source = source
        self._done = False

    def succeeded(self) -> None:
        self._limiter._resolve(self, _SUCCEEDED)

    def failed(self) -> None:
        self._limiter._resolve(self, _FAILED)

    def cancelled(self) -> None:
        self._limiter._resolve(self, _CANCELLED)

    def __repr__(self) -> str:
        state = "resolved" if self._done else "open"
        return f"LoginAttempt(source={self._source!r}, {state})"


class LoginRateLimiter:
    """Sliding-window failed-login counter with lockout, keyed by source and username.

    Why this shape (each point answers an attack seen against the real edge):

    * **Counted as it starts.** :meth:`try_begin` records the attempt as a failure
      before the password is checked, under the same lock as the lock-out test, and
      a success takes it back. Counting at the end let 100 concurrent guesses from
      one address get about 33 checked with a limit of 10; now exactly 10 are.
    * **Source = address or IPv6 /64** (:func:`source_key`): one IPv6 client owns a
      /64 and could otherwise rotate addresses for unlimited guesses.
    * **Two limits.** A source is locked after ``failures_per_window`` failures; a
      username only after ``USERNAME_LIMIT_FACTOR`` times as many (from any
      sources). So one client locks itself out long before it could lock a
      partner's account, and a slow distributed guess at one username is capped.
    * **Known sources ignore the username lock.** A source that signed in as that
      username within ``known_address_seconds`` is held to its own source limit
      only: a distributed attack that locks ``partner_mailco`` no longer stops the
      partner's own feed, while a new source for that username still waits.
    * **Bounded memory.** At most ``max_keys`` windows and ``max_known_pairs``
      known (username, source) pairs, least recently used dropped first; an
      attacker spraying usernames or addresses cannot grow either table.

    Thread-safe (one lock); every operation is O(limit). Pure: the clock is injected.
    """

    def __init__(
        self,
        failures_per_window: int,
        lockout_seconds: float,
        *,
        window_seconds: float = 60.0,
        known_address_seconds: float = 86_400.0,
        max_keys: int = 100_000,
        max_known_pairs: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = max(1, failures_per_window)
        self._lockout = max(0.0, lockout_seconds)
        self._window = window_seconds
        self._known_seconds = known_address_seconds
        self._max_keys = max_keys
        self._max_known = max_known_pairs
        self._clock = clock
        self._keys: OrderedDict[str, _Window] = OrderedDict()
        # (username, source key) -> time of its last success; oldest first
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._ids = itertools.count()
        self._lock = threading.Lock()

    # --- public -------------------------------------------------------------------
    def retry_after(self, address: str | None, username: str | None) -> int | None:
        """Whole seconds until this address/username may try again, or ``None`` if allowed now.

        The same verdict :meth:`try_begin` would give, without starting an attempt
        (for the check before the credentials are even parsed).
        """
        with self._lock:
            now = self._clock()
            wait = self._wait(source_key(address), username, None, now)
        return wait or None

    def try_begin(
        self, address: str | None, username: str | None, *, guess: bytes | None = None
    ) -> LoginAttempt | int:
        """Start a login attempt: a :class:`LoginAttempt`, or the whole seconds to wait (>= 1).

        Atomically: refused if the source (or, unless the source is known for it,
        the username) is locked or already has as many attempts counted as its
        limit; else counted on both keys at once. The attempt that reaches the limit
        is still admitted, the next is refused; failures reaching it lock the key out.

        ``guess`` is an optional opaque token for the password being tried (e.g.
        :meth:`Authenticator.guess_key <processor.registry.credentials.Authenticator.guess_key>`).
        While an attempt with the same token is still open on a key, another one
        joins it instead of counting again: it is the same guess, checked by the same
        argon2 run. So a partner opening 32 connections at once is one attempt, not
        32 (the 11th would be refused), and an attacker gains nothing by repeating.
        """
        with self._lock:
            now = self._clock()
            source = source_key(address)
            wait = self._wait(source, username, guess, now)
            if wait:
                return wait
            holds = []
            for key, limit in self._keys_for(source, username):
                window = self._window_for(key)
                window.prune(now - self._window)
                joined = window.joinable.get(guess) if guess is not None else None
                if joined is not None:
                    window.open[joined].holders += 1
                    holds.append((key, joined, limit))
                else:
                    attempt_id = next(self._ids)
                    window.add(attempt_id, now, guess)
                    holds.append((key, attempt_id, limit))
            return LoginAttempt(self, tuple(holds), username, source)

    def record_failure(self, address: str | None, username: str | None) -> None:
        """Count a failure that had no :class:`LoginAttempt` (never after one: that would count twice)."""
        with self._lock:
            now = self._clock()
            for key, limit in self._keys_for(source_key(address), username):
                window = self._window_for(key)
                attempt_id = next(self._ids)
                window.add(attempt_id, now, None)
                window.confirm(attempt_id)
                self._lock_if_full(window, limit, now)

    def __len__(self) -> int:
        return len(self._keys)

    def known_len(self) -> int:
        """How many (username, source) pairs are remembered as known-good."""
        return len(self._known)

    # --- internals (all called with self._lock held) --------------------------------
    def _keys_for(self, source: str, username: str | None) -> list[tuple[str, int]]:
        keys = []
        if source:
            keys.append(("a:" + source, self._limit))
        if username:
            keys.append(("u:" + username, self._limit * USERNAME_LIMIT_FACTOR))
        return keys

    def _wait(self, source: str, username: str | None, guess: bytes | None, now: float) -> int:
        """Whole seconds to wait (0 = may start now)."""
        known = self._is_known(username, source, now) if username else False
        worst = 0.0
        for key, limit in self._keys_for(source, username):
            if known and key[0] == "u":
                continue  # a known source is held to its own limit only
            window = self._keys.get(key)
            if window is None:
                continue
            if window.locked_until > now:
                worst = max(worst, window.locked_until - now)
                continue
            window.prune(now - self._window)
            if guess is not None and guess in window.joinable:
                continue  # joins an attempt already counted
            if len(window.entries) >= limit:
                worst = max(worst, _BUSY_WAIT)
        return max(1, math.ceil(worst)) if worst > 0 else 0

    def _window_for(self, key: str) -> _Window:
        window = self._keys.get(key)
        if window is None:
            window = self._keys[key] = _Window()
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return window

    def _lock_if_full(self, window: _Window, limit: int, now: float) -> None:
        window.prune(now - self._window)
        if window.failures() >= limit:
            window.lock(now + self._lockout)

    def _resolve(self, attempt: LoginAttempt, outcome: str) -> None:
        with self._lock:
            if attempt._done:
                return
            attempt._done = True
            now = self._clock()
            for key, attempt_id, limit in attempt._holds:
                window = self._keys.get(key)
                opened = window.open.get(attempt_id) if window is not None else None
                if window is None or opened is None:
                    continue  # evicted, out of the window, or settled by a joined attempt
                if outcome == _SUCCEEDED:
                    window.remove(attempt_id)
                elif outcome == _CANCELLED:
                    opened.holders -= 1
                    if opened.holders == 0:
                        window.remove(attempt_id)
                else:
                    window.confirm(attempt_id)
                    self._lock_if_full(window, limit, now)
            if outcome == _SUCCEEDED and attempt._username and attempt._source:
                self._remember(attempt._username, attempt._source, now)

    def _is_known(self, username: str, source: str, now: float) -> bool:
        if not source:
            return False
        seen = self._known.get((username, source))
        if seen is None:
            return False
        if now - seen >= self._known_seconds:
            del self._known[(username, source)]
            return False
        return True

    def _remember(self, username: str, source: str, now: float) -> None:
        if self._known_seconds <= 0 or self._max_known <= 0:
            return
        pair = (username, source)
        self._known[pair] = now
        self._known.move_to_end(pair)
        known = self._known
        # Oldest first (each success moves its pair to the end): drop the expired, then
        # the least recently used beyond the bound.
        while known:
            oldest = next(iter(known.values()))
            if now - oldest < self._known_seconds and len(known) <= self._max_known:
                break
            known.popitem(last=False)
