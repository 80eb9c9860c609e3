"""Password checks for HTTP Basic credentials (argon2id), cheap for repeat callers.

Why this shape:

* argon2id at (at least) the OWASP minimum makes each cold check cost tens of
  milliseconds on purpose, so cold checks run on a small bounded thread pool and
  never on the event loop; a flood of wrong passwords queues at most
  ``max_pending`` jobs and is then refused (treated as bad credentials), so it
  cannot exhaust memory or CPU.
* Partners send many messages on one password, so successes are cached. The
  cache key is HMAC-SHA256(process-random key, username NUL password): the
  password is never stored, and the key dies with the process. Each entry keeps
  a fingerprint of what the check relied on (principal id and type, password
  hash, ``active``, ``allowed_networks``) and a hit counts only while the
  principal in the *current* registry has the same fingerprint: a rotated hash,
  a deactivation or new networks take effect at the next reload, yet a reload
  that left a principal alone keeps its logins warm (dropping the whole cache at
  every reload sent every partner back to argon2 at once). Entries expire after
  ``cache_ttl_s`` and the cache holds at most ``cache_size`` entries.
* Single flight: concurrent cold checks of the same credentials (same cache key,
  same registry version) share one argon2 run and its result, success or
  failure. A partner opening 32 connections at once after a start or a reload
  costs one run, not 32 queued on the pool; the run holds one ``max_pending``
  slot however many wait for it.
* Unknown usernames (and customers without a login) are verified against a dummy
  hash with the registry's most common argon2 parameters, so they cost the same
  as a wrong password and do not reveal which usernames exist. Inactive
  principals go through the same check and then get ``None``: bad credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from argon2 import Parameters, PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from processor.errors import AuthenticatorBusy
from processor.registry.model import Principal, Registry

__all__ = [
    "PRODUCTION_PARAMETERS",
    "Authenticator",
    "AuthenticatorBusy",
    "hash_password",
]


log = logging.getLogger(__name__)

PRODUCTION_PARAMETERS = Parameters(
    type=Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=2,
    memory_cost=19456,  # KiB = 19 MiB
    parallelism=1,
)
"""argon2id m=19456 KiB, t=2, p=1: the OWASP Password Storage Cheat Sheet minimum.

Chosen over RFC 9106's m=64 MiB,t=3,p=4 because the edge shares few cores with
Kafka and the processor: ~35 ms per check keeps a wrong-password flood cheap to
absorb while staying at the recommended floor. Existing hashes with other
argon2id parameters still verify (parameters are read from each hash).
"""

_MAX_PASSWORD_BYTES = 4096


def hash_password(password: str, *, parameters: Parameters = PRODUCTION_PARAMETERS) -> str:
    """An argon2id PHC string for ``password`` (for ``registry hash-password``)."""
    return PasswordHasher.from_parameters(parameters).hash(password)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _password_bytes(password: str | bytes) -> bytes:
    return password if isinstance(password, bytes) else _utf8(password)


def _fingerprint(principal: Principal) -> bytes:
    """Digest of what a successful check of ``principal`` depended on (no secrets kept)."""
    parts = [
        principal.id,
        principal.type.value,
        principal.password_hash or "",
        "1" if principal.active else "0",
        ",".join(str(n) for n in principal.allowed_networks),
    ]
    return hashlib.sha256(_utf8("\0".join(parts))).digest()


class _Flight:
    """One cold check in progress and how many callers are waiting for it."""

    __slots__ = ("future", "waiters")

    def __init__(self, future: Future[Principal | None]) -> None:
        self.future = future
        self.waiters = 0


class Authenticator:
    """``verify(username, password) -> Principal | None`` against the current registry."""

    def __init__(
        self,
        get_registry: Callable[[], Registry],
        workers: int = 2,
        *,
        max_pending: int | None = None,
        cache_size: int = 1024,
        cache_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._get_registry = get_registry
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._max_pending = max_pending if max_pending is not None else workers * 16
        self._pending = 0
        self._pending_lock = threading.Lock()  # guards _pending and _flights
        self._flights: dict[tuple[str, bytes], _Flight] = {}  # (registry version, cache key)
        self._hmac_key = secrets.token_bytes(32)
        # cache key -> (principal id, fingerprint, expiry)
        self._cache: OrderedDict[bytes, tuple[str, bytes, float]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = cache_size
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._dummy: dict[str, str] = {}  # registry version -> dummy hash
        self._dummy_lock = threading.Lock()
        self._hasher = PasswordHasher()  # verify() reads parameters from each hash
        self.overloaded = 0
        """Cold checks refused because ``max_pending`` jobs were already queued."""

    # --- public -------------------------------------------------------------------
    def verify(self, username: str, password: str | bytes) -> Principal | None:
        """Check credentials in the calling thread (blocking, ~one argon2 run when cold)."""
        registry = self._get_registry()
        prepared = self._prepare(registry, username, password)
        if not isinstance(prepared, bytes):
            return prepared
        return self._verify_cold(registry, prepared, username, _password_bytes(password))

    async def verify_async(self, username: str, password: str | bytes) -> Principal | None:
        """Like :meth:`verify`, but the argon2 run happens on the bounded worker pool.

        A cold check of credentials already being checked joins that run (single
        flight) instead of queueing another; only a new run can be refused as busy.
        """
        registry = self._get_registry()
        prepared = self._prepare(registry, username, password)
        if not isinstance(prepared, bytes):
            return prepared
        flight_key = (registry.version, prepared)
        started: Future[Principal | None] | None = None
        with self._pending_lock:
            flight = self._flights.get(flight_key)
            if flight is None:
                if self._pending >= self._max_pending:
                    self.overloaded += 1
                    if self.overloaded & (self.overloaded - 1) == 0:  # 1, 2, 4, 8...: no log flood
                        log.warning(
                            "credential checks refused as busy: %d queued (refused so far: %d)",
                            self._pending,
                            self.overloaded,
                        )
                    raise AuthenticatorBusy(f"{self._pending} credential checks already queued")
                try:
                    started = self._executor.submit(
                        self._verify_cold, registry, prepared, username, _password_bytes(password)
                    )
                except RuntimeError:  # executor shut down
                    return None
                self._pending += 1
                flight = self._flights[flight_key] = _Flight(started)
            flight.waiters += 1
        if started is not None:
            # The slot and the flight are held until the run ends (at once if it already has).
            started.add_done_callback(partial(self._landed, flight_key))
        return await self._wait_for(flight)

    def guess_key(self, username: str, password: str | bytes) -> bytes:
        """An opaque token equal for equal credentials (for ``LoginRateLimiter.try_begin``).

        HMAC-SHA256 under this process's random key, so it reveals nothing about the
        password and means nothing to another process.
        """
        return self._key(username, _password_bytes(password))

    def close(self) -> None:
        """Stop the worker pool; queued checks are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        return self._pending

    def cache_len(self) -> int:
        return len(self._cache)

    # --- internals ----------------------------------------------------------------
    def _landed(self, flight_key: tuple[str, bytes], fut: Future[Principal | None]) -> None:
        """A run ended (result, exception or cancelled): free its slot, end its flight."""
        with self._pending_lock:
            self._pending -= 1
            flight = self._flights.get(flight_key)
            if flight is not None and flight.future is fut:
                del self._flights[flight_key]

    async def _wait_for(self, flight: _Flight) -> Principal | None:
        """The flight's result, on this caller's own loop future.

        Not ``asyncio.wrap_future``: cancelling a wrapped future cancels the shared
        run, which would hand ``CancelledError`` to every other caller waiting on it.
        Here a cancelled caller only leaves; the last one to leave cancels the run
        (which drops it if still queued; a running one finishes and frees its slot).
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Principal | None] = loop.create_future()

        def settle(fut: Future[Principal | None]) -> None:
            if waiter.done():
                return
            if fut.cancelled():
                waiter.cancel()
            elif (exc := fut.exception()) is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(fut.result())

        def deliver(fut: Future[Principal | None]) -> None:
            try:
                loop.call_soon_threadsafe(settle, fut)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

        flight.future.add_done_callback(deliver)
        cancelled = False
        try:
            return await waiter
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            with self._pending_lock:
                flight.waiters -= 1
                abandoned = cancelled and flight.waiters == 0
            if abandoned:
                flight.future.cancel()

    def _key(self, username: str, pw: bytes) -> bytes:
        return hmac.new(self._hmac_key, _utf8(username) + b"\0" + pw, hashlib.sha256).digest()

    def _prepare(self, registry: Registry, username: str, password: str | bytes) -> bytes | Principal | None:
        """Cache key for a cold check, or the final answer (cache hit / impossible input)."""
        pw = _password_bytes(password)
        if "\0" in username or len(pw) > _MAX_PASSWORD_BYTES or len(username) > 1024:
            return None  # no registry username has NUL or is that long; no timing to hide
        key = self._key(username, pw)
        now = self._clock()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                principal_id, fingerprint, expires = hit
                if now < expires:
                    principal = registry.principal(principal_id)
                    if (
                        principal is not None
                        and principal.active
                        and principal.username is not None
                        and hmac.compare_digest(_utf8(principal.username), _utf8(username))
                        # unchanged since the check: same hash, still active, same networks
                        and hmac.compare_digest(_fingerprint(principal), fingerprint)
                    ):
                        self._cache.move_to_end(key)
                        return principal
                del self._cache[key]
        return key

    def _verify_cold(
        self, registry: Registry, key: bytes, username: str, password: bytes
    ) -> Principal | None:
        principal = registry.principal_by_username(username)
        target = principal.password_hash if principal is not None else None
        if target is None:
            target = self._dummy_hash(registry)
        try:
            ok = bool(self._hasher.verify(target, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok or principal is None or not principal.active:
            return None
        # Stored even if the registry changed meanwhile: the fingerprint is checked
        # against the registry of the day at every hit.
        entry = (principal.id, _fingerprint(principal), self._clock() + self._cache_ttl_s)
        with self._cache_lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _dummy_hash(self, registry: Registry) -> str:
        """A hash of a random secret with the registry's most common parameters."""
        with self._dummy_lock:
            found = self._dummy.get(registry.version)
            if found is None:
                params = _common_parameters(registry)
                found = PasswordHasher.from_parameters(params).hash(secrets.token_urlsafe(24))
                self._dummy = {registry.version: found}
            return found


def _common_parameters(registry: Registry) -> Parameters:
    counts: Counter[tuple[int, ...]] = Counter()
    hashes = [p.password_hash for p in registry.partners]
    hashes += [c.login.password_hash for c in registry.customers if c.login is not None]
    for h in hashes:
        try:
            p = extract_parameters(h)
        except InvalidHashError:
            continue
        counts[(p.version, p.salt_len, p.hash_len, p.time_cost, p.memory_cost, p.parallelism)] += 1
    if not counts:
        return PRODUCTION_PARAMETERS
    version, salt_len, hash_len, time_cost, memory_cost, parallelism = counts.most_common(1)[0][0]
    return Parameters(
        type=Type.ID,
        version=version,
        salt_len=salt_len,
        hash_len=hash_len,
        time_cost=time_cost,
        memory_cost=memory_cost,
        parallelism=parallelism,
    )
