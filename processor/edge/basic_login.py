"""HTTP Basic login for ``/hl7`` and ``/soap``: lock-out, argon2 check, ``allowed_networks``.

The order is the cheap refusals first: the failed-login lock-out of the source address /
username is consulted before any argon2 work (so brute force cannot burn CPU; an attempt
counts as it starts), then the password (argon2 on a bounded pool, successes cached),
then the principal's ``allowed_networks``. Every refusal is counted in
``hl7_edge_auth_failures_total`` under its SPEC 6 reason. The MLLP listener shares the
same :class:`LoginRateLimiter` (per-address lock-out) but identifies by certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processor.edge.auth import WWW_AUTHENTICATE, LoginRateLimiter, parse_basic
from processor.errors import AuthenticatorBusy
from processor.metrics import EDGE_AUTH_FAILURES
from processor.registry.credentials import Authenticator
from processor.registry.model import Principal
from processor.registry.networks import address_allowed

__all__ = ["BasicLogin", "Refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A login refused: the HTTP status, a generic text, and the headers that go with it."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def _unauthorised(reason: str = "bad_credentials") -> Refusal:
    EDGE_AUTH_FAILURES.labels(reason).inc()
    return Refusal(401, "Unauthorized", {"WWW-Authenticate": WWW_AUTHENTICATE})


def _rate_limited(wait: int) -> Refusal:
    EDGE_AUTH_FAILURES.labels("rate_limited").inc()
    return Refusal(429, "Too many failed logins", {"Retry-After": str(wait)})


class BasicLogin:
    """Checks an ``Authorization`` header for a request from ``source``."""

    def __init__(self, authenticator: Authenticator, limiter: LoginRateLimiter) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    async def check(self, authorization: str | None, source: str) -> Principal | Refusal:
        creds = parse_basic(authorization)
        if creds is None:
            wait = self.limiter.retry_after(source, None)
            if wait is not None:
                return _rate_limited(wait)
            # No Authorization at all is how JAX-WS and .NET clients start (they send
            # credentials after the 401 challenge): not a failed login.
            return _unauthorised("missing_credentials" if authorization is None else "bad_credentials")
        # Counted as it starts, so concurrent guesses cannot outrun the limit.
        # A partner's burst of first connections with the same credentials joins one
        # attempt (and one argon2 run) instead of counting each connection.
        attempt = self.limiter.try_begin(
            source, creds.username, guess=self.authenticator.guess_key(creds.username, creds.password)
        )
        if isinstance(attempt, int):
            return _rate_limited(attempt)
        try:
            principal = await self.authenticator.verify_async(creds.username, creds.password)
        except AuthenticatorBusy:
            # Server-side overload, not the sender's fault: no failed login is recorded.
            attempt.cancelled()
            return Refusal(503, "Busy, retry later", {"Retry-After": "1"})
        if principal is None or not principal.active:
            attempt.failed()
            return _unauthorised()
        if not address_allowed(source, principal.allowed_networks):
            attempt.cancelled()  # right password, wrong place: neither a guess nor a known address
            EDGE_AUTH_FAILURES.labels("network_not_allowed").inc()
            return Refusal(403, "Forbidden")
        attempt.succeeded()
        return principal
