"""Authenticator: argon2id checks, the success cache, timing parity, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters

from processor.registry.credentials import PRODUCTION_PARAMETERS, Authenticator, AuthenticatorBusy, hash_password
from processor.registry.loader import load_registry, parse_registry
from processor.registry.model import PrincipalType, Registry

REPO = Path(__file__).resolve().parents[3]


class SpyHasher:
    """Counts argon2 runs and remembers which hash each one used; can be made to block."""

    def __init__(self) -> None:
        self.real = PasswordHasher()
        self.calls: list[str] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    def verify(self, phc: str, password: bytes) -> bool:
        self.calls.append(phc)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        return self.real.verify(phc, password)


@pytest.fixture
def registry(sample_path: Path) -> Registry:
    return load_registry(sample_path)


def make_auth(reg_ref: list[Registry], **kw: Any) -> tuple[Authenticator, SpyHasher]:
    auth = Authenticator(lambda: reg_ref[0], **kw)
    spy = SpyHasher()
    auth._hasher = spy  # type: ignore[assignment]  # count argon2 runs
    return auth, spy


def test_good_credentials_give_the_principal(registry: Registry) -> None:
    auth, _ = make_auth([registry])
    partner = auth.verify("partner_mailco", "pw-partner_mailco")
    assert partner is not None and partner.id == "mailco" and partner.type is PrincipalType.PARTNER
    customer = auth.verify("trust_user", "pw-trust_user")
    assert customer is not None and customer.id == "trust-1" and customer.type is PrincipalType.CUSTOMER
    assert customer.alias == "trustalias"


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("partner_mailco", "wrong"),
        ("partner_mailco", "PW-PARTNER_MAILCO"),
        ("partner_mailco", ""),
        ("nobody", "pw-nobody"),
        ("", ""),
        ("partner_printco", "pw-partner_printco"),  # inactive partner, right password
        ("dormant_user", "pw-dormant_user"),  # inactive customer, right password
        ("partner_mailco\x00x", "pw-partner_mailco"),
        ("partner_mailco", "x" * 5000),
    ],
)
def test_bad_credentials_give_none(registry: Registry, username: str, password: str) -> None:
    auth, _ = make_auth([registry])
    assert auth.verify(username, password) is None


def test_unknown_user_costs_one_argon2_run_with_the_registry_parameters(registry: Registry) -> None:
    auth, spy = make_auth([registry])
    assert auth.verify("nobody", "whatever") is None
    assert auth.verify("partner_mailco", "wrong") is None
    assert len(spy.calls) == 2
    unknown, known = (extract_parameters(h) for h in spy.calls)
    assert unknown == known  # same cost: no username enumeration by timing
    assert spy.calls[0] != registry.partner_by_id("mailco").password_hash  # type: ignore[union-attr]


def test_inactive_principal_costs_the_same_as_a_wrong_password(registry: Registry) -> None:
    auth, spy = make_auth([registry])
    assert auth.verify("partner_printco", "pw-partner_printco") is None
    assert len(spy.calls) == 1


def test_success_is_cached_and_failures_are_not(registry: Registry) -> None:
    auth, spy = make_auth([registry])
    for _ in range(5):
        assert auth.verify("partner_mailco", "pw-partner_mailco") is not None
    assert len(spy.calls) == 1
    for _ in range(3):
        assert auth.verify("partner_mailco", "wrong") is None
    assert len(spy.calls) == 4  # every failure pays the full price
    assert auth.verify("partner_mailco", "pw-partner_mailco") is not None
    assert len(spy.calls) == 4


def test_cache_never_holds_the_password(registry: Registry) -> None:
    auth, _ = make_auth([registry])
    auth.verify("partner_mailco", "pw-partner_mailco")
    cache = auth._cache
    assert len(cache) == 1
    for key, value in cache.items():
        assert isinstance(key, bytes) and len(key) == 32  # an HMAC-SHA256 digest
        assert b"pw-partner_mailco" not in key
        assert "pw-partner_mailco" not in repr(value)


def test_cache_dropped_when_registry_changes(registry: Registry, sample_path: Path, hash_of: Callable[[str], str]) -> None:
    ref = [registry]
    auth, spy = make_auth(ref)
    assert auth.verify("partner_mailco", "pw-partner_mailco") is not None
    text = sample_path.read_text()
    old_hash = registry.partner_by_id("mailco").password_hash  # type: ignore[union-attr]
    ref[0] = parse_registry(text.replace(old_hash, hash_of("rotated")).encode())
    assert auth.verify("partner_mailco", "pw-partner_mailco") is None  # rotated: old password dead
    assert auth.verify("partner_mailco", "rotated") is not None
    assert len(spy.calls) == 3


def test_cache_entries_expire(registry: Registry) -> None:
    now = [1000.0]
    auth, spy = make_auth([registry], cache_ttl_s=300.0, clock=lambda: now[0])
    auth.verify("partner_mailco", "pw-partner_mailco")
    now[0] += 299.0
    auth.verify("partner_mailco", "pw-partner_mailco")
    assert len(spy.calls) == 1
    now[0] += 2.0
    auth.verify("partner_mailco", "pw-partner_mailco")
    assert len(spy.calls) == 2


def test_cache_is_bounded(registry: Registry) -> None:
    auth, _ = make_auth([registry], cache_size=2)
    auth.verify("partner_mailco", "pw-partner_mailco")
    auth.verify("trust_user", "pw-trust_user")
    auth.verify("gp2_user", "pw-gp2_user")
    assert auth.cache_len() == 2


def test_verify_async(registry: Registry) -> None:
    auth, spy = make_auth([registry])

    async def scenario() -> None:
        ok = await auth.verify_async("partner_mailco", "pw-partner_mailco")
        assert ok is not None and ok.id == "mailco"
        assert await auth.verify_async("partner_mailco", "nope") is None
        again = await auth.verify_async("partner_mailco", "pw-partner_mailco")
        assert again is not None

    asyncio.run(scenario())
    assert len(spy.calls) == 2
    auth.close()


def test_flood_is_bounded_and_loop_stays_free(registry: Registry) -> None:
    auth, spy = make_auth([registry], workers=1, max_pending=2)
    spy.gate = threading.Event()

    async def scenario() -> None:
        first = asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco"))
        second = asyncio.ensure_future(auth.verify_async("partner_mailco", "wrong-1"))
        await asyncio.sleep(0)
        while not spy.started.is_set():
            await asyncio.sleep(0.01)
        # both slots taken (one running, one queued): further checks are refused at once
        assert auth.pending == 2
        with pytest.raises(AuthenticatorBusy):
            await auth.verify_async("partner_mailco", "pw-partner_mailco")
        assert auth.overloaded == 1
        assert not first.done()  # the loop ran our coroutine while argon2 was busy
        spy.gate.set()  # type: ignore[union-attr]
        assert (await first) is not None
        assert (await second) is None
        assert auth.pending == 0

    asyncio.run(scenario())
    auth.close()


def test_cancelled_waiter_keeps_its_slot_until_the_job_ends(registry: Registry) -> None:
    auth, spy = make_auth([registry], workers=1, max_pending=1)
    spy.gate = threading.Event()

    async def scenario() -> None:
        task = asyncio.ensure_future(auth.verify_async("partner_mailco", "x"))
        while not spy.started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert auth.pending == 1  # argon2 is still running in the worker
        spy.gate.set()  # type: ignore[union-attr]
        while auth.pending:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    auth.close()


def test_production_parameters_are_the_documented_ones() -> None:
    p = PRODUCTION_PARAMETERS
    assert (p.memory_cost, p.time_cost, p.parallelism) == (19456, 2, 1)
    assert (p.salt_len, p.hash_len, p.version) == (16, 32, 19)
    phc = hash_password("testing")
    assert phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PasswordHasher().verify(phc, "testing")
    doc = (REPO / "README.md").read_text()
    assert "m=19456" in doc and "t=2" in doc and "p=1" in doc


def test_production_hash_authenticates_and_unknown_users_match_its_cost(
    to_bytes: Callable[[dict[str, Any]], bytes],
) -> None:
    doc = {
        "customers": [{"id": "c1", "alias": "a1"}],
        "partners": [
            {"id": "p1", "username": "user", "password_hash": hash_password("s3cret"), "authorised_by": ["c1"]}
        ],
    }
    reg = parse_registry(to_bytes(doc))
    auth, spy = make_auth([reg])
    assert auth.verify("user", "s3cret") is not None
    assert auth.verify("ghost", "s3cret") is None
    assert [extract_parameters(h).memory_cost for h in spy.calls] == [19456, 19456]


def test_hash_password_accepts_cheap_parameters_for_tests() -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    phc = hash_password("x", parameters=extract_parameters(cheap.hash("y")))
    assert phc.startswith("$argon2id$v=19$m=8,t=1,p=1$")
