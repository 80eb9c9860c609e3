"""Password checks for HTTP Basic credentials (argon2id), cheap for repeat callers.

Why this shape:

* argon2id at (at least) the OWASP minimum makes each cold check cost tens of
  milliseconds on purpose, so cold checks run on a small bounded thread pool and
  never on the event loop; a flood of wrong passwords queues at most
  ``max_pending`` jobs and is then refused (treated as bad credentials), so it
  cannot exhaust memory or CPU.
* Partners send many messages on one password, so successes are cached. The
  cache key is HMAC-SHA256(process-random key, username NUL password): the
  password is never stored, and the key dies with the process. The cache is
  dropped whenever the registry version changes (revoked or rotated credentials
  take effect at the next reload), entries expire after ``cache_ttl_s`` and the
  cache holds at most ``cache_size`` entries.
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

from argon2 import Parameters, PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from processor.errors import GatewayError
from processor.registry.model import Principal, Registry

__all__ = [
    "PRODUCTION_PARAMETERS",
    "Authenticator",
    "AuthenticatorBusy",
    "hash_password",
]


class AuthenticatorBusy(GatewayError):
    """Too many cold checks queued: the caller should answer "busy, retry", not "bad password"."""

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
        self._pending_lock = threading.Lock()
        self._hmac_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._cache_version: str | None = None
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
        """Like :meth:`verify`, but the argon2 run happens on the bounded worker pool."""
        registry = self._get_registry()
        prepared = self._prepare(registry, username, password)
        if not isinstance(prepared, bytes):
            return prepared
        with self._pending_lock:
            if self._pending >= self._max_pending:
                self.overloaded += 1
                if self.overloaded & (self.overloaded - 1) == 0:  # 1, 2, 4, 8...: no log flood
                    log.warning(
                        "credential checks refused as busy: %d queued (refused so far: %d)",
                        self._pending,
                        self.overloaded,
                    )
                raise AuthenticatorBusy(f"{self._pending} credential checks already queued")
            self._pending += 1
        try:
            fut: Future[Principal | None] = self._executor.submit(
                self._verify_cold, registry, prepared, username, _password_bytes(password)
            )
        except RuntimeError:  # executor shut down
            self._release()
            return None
        fut.add_done_callback(self._release)  # the slot is held until the job ends
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        """Stop the worker pool; queued checks are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        return self._pending

    def cache_len(self) -> int:
        return len(self._cache)

    # --- internals ----------------------------------------------------------------
    def _release(self, _fut: object = None) -> None:
        with self._pending_lock:
            self._pending -= 1

    def _prepare(
        self, registry: Registry, username: str, password: str | bytes
    ) -> bytes | Principal | None:
        """Cache key for a cold check, or the final answer (cache hit / impossible input)."""
        pw = _password_bytes(password)
        if "\0" in username or len(pw) > _MAX_PASSWORD_BYTES or len(username) > 1024:
            return None  # no registry username has NUL or is that long; no timing to hide
        key = hmac.new(
            self._hmac_key,
            _utf8(username) + b"\0" + pw,
            hashlib.sha256,
        ).digest()
        now = self._clock()
        with self._cache_lock:
            if self._cache_version != registry.version:
                self._cache.clear()
                self._cache_version = registry.version
            hit = self._cache.get(key)
            if hit is not None:
                principal_id, expires = hit
                if now < expires:
                    self._cache.move_to_end(key)
                    principal = registry.principal(principal_id)
                    if (
                        principal is not None
                        and principal.active
                        and principal.username is not None
                        and hmac.compare_digest(_utf8(principal.username), _utf8(username))
                    ):
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
        with self._cache_lock:
            if self._cache_version == registry.version:
                self._cache[key] = (principal.id, self._clock() + self._cache_ttl_s)
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
