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
        self.error: Exception | None = None

    def verify(self, phc: str, password: bytes) -> bool:
        self.calls.append(phc)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.error is not None:
            raise self.error
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


def test_rotated_hash_kills_the_cached_login(registry: Registry, sample_path: Path, hash_of: Callable[[str], str]) -> None:
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
            await auth.verify_async("partner_mailco", "wrong-2")
        assert auth.overloaded == 1
        # ...but the same credentials as a run in progress join it: no new work, not busy
        joiner = asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco"))
        await asyncio.sleep(0)
        assert auth.pending == 2 and auth.overloaded == 1
        assert not first.done()  # the loop ran our coroutine while argon2 was busy
        spy.gate.set()  # type: ignore[union-attr]
        assert (await first) is not None
        assert (await second) is None
        assert (await joiner) is not None
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


# --- the cache across registry reloads ----------------------------------------------------


def _reload(text: str, old: str, new: str) -> Registry:
    assert old in text
    return parse_registry(text.replace(old, new).encode())


def test_reload_keeps_unchanged_logins_and_rechecks_a_rotated_one(
    registry: Registry, sample_path: Path, hash_of: Callable[[str], str]
) -> None:
    ref = [registry]
    auth, spy = make_auth(ref)
    assert auth.verify("partner_mailco", "pw-partner_mailco") is not None
    assert auth.verify("trust_user", "pw-trust_user") is not None
    assert len(spy.calls) == 2
    old_hash = registry.partner_by_id("mailco").password_hash  # type: ignore[union-attr]
    ref[0] = _reload(sample_path.read_text(), old_hash, hash_of("rotated"))
    assert ref[0].version != registry.version
    customer = auth.verify("trust_user", "pw-trust_user")
    assert customer is not None and customer.id == "trust-1"
    assert len(spy.calls) == 2  # unchanged principal: still cached, no argon2 run
    assert auth.verify("partner_mailco", "pw-partner_mailco") is None  # changed: checked again
    assert len(spy.calls) == 3
    assert spy.calls[-1] == hash_of("rotated")


def test_reload_keeps_every_login_when_no_principal_changed(registry: Registry, sample_path: Path) -> None:
    ref = [registry]
    auth, spy = make_auth(ref)
    auth.verify("partner_mailco", "pw-partner_mailco")
    ref[0] = _reload(sample_path.read_text(), "alias: gp2alias", "alias: gp2renamed")
    assert ref[0].version != registry.version
    assert auth.verify("partner_mailco", "pw-partner_mailco") is not None
    assert len(spy.calls) == 1


def test_reload_returns_the_current_principal_from_a_cached_login(
    registry: Registry, sample_path: Path
) -> None:
    ref = [registry]
    auth, spy = make_auth(ref)
    auth.verify("partner_mailco", "pw-partner_mailco")
    ref[0] = _reload(sample_path.read_text(), "authorised_by: [trust-1, old-1]", "authorised_by: [trust-1]")
    partner = auth.verify("partner_mailco", "pw-partner_mailco")
    assert partner is not None and partner.authorised_by == frozenset({"trust-1"})  # not a stale copy
    assert len(spy.calls) == 1  # grants are not part of the password check


def test_deactivation_invalidates_the_cached_login(registry: Registry, sample_path: Path) -> None:
    ref = [registry]
    auth, spy = make_auth(ref)
    auth.verify("partner_mailco", "pw-partner_mailco")
    ref[0] = _reload(sample_path.read_text(), "  - id: mailco\n", "  - id: mailco\n    active: false\n")
    assert auth.verify("partner_mailco", "pw-partner_mailco") is None
    assert len(spy.calls) == 2  # costs a full check, like any wrong password
    ref[0] = registry  # reactivated: checked afresh, then cached again
    assert auth.verify("partner_mailco", "pw-partner_mailco") is not None
    assert auth.verify("partner_mailco", "pw-partner_mailco") is not None
    assert len(spy.calls) == 3


def test_changed_networks_invalidate_the_cached_login(registry: Registry, sample_path: Path) -> None:
    ref = [registry]
    auth, spy = make_auth(ref)
    assert auth.verify("trust_user", "pw-trust_user") is not None
    ref[0] = _reload(sample_path.read_text(), '["203.0.113.0/24"]', '["203.0.113.0/25"]')
    customer = auth.verify("trust_user", "pw-trust_user")
    assert customer is not None and [str(n) for n in customer.allowed_networks] == ["203.0.113.0/25"]
    assert len(spy.calls) == 2


def test_unknown_users_still_use_the_dummy_hash_after_a_reload(registry: Registry, sample_path: Path) -> None:
    ref = [registry]
    auth, spy = make_auth(ref)
    assert auth.verify("nobody", "x") is None
    ref[0] = _reload(sample_path.read_text(), "alias: gp2alias", "alias: gp2renamed")
    assert auth.verify("nobody", "x") is None
    assert len(spy.calls) == 2
    assert all(extract_parameters(h) == extract_parameters(spy.calls[0]) for h in spy.calls)
    assert not any(h == p.password_hash for h in spy.calls for p in registry.partners)


# --- single flight --------------------------------------------------------------------------


def test_concurrent_identical_checks_share_one_argon2_run(registry: Registry) -> None:
    auth, spy = make_auth([registry], workers=2, max_pending=4)
    spy.gate = threading.Event()

    async def scenario() -> None:
        tasks = [
            asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco")) for _ in range(32)
        ]
        await asyncio.sleep(0)  # every task has now joined
        while not spy.started.is_set():
            await asyncio.sleep(0.01)
        assert auth.pending == 1  # the run is counted once, however many wait for it
        assert [f.waiters for f in auth._flights.values()] == [32]
        spy.gate.set()  # type: ignore[union-attr]
        results = await asyncio.gather(*tasks)
        assert all(p is not None and p.id == "mailco" for p in results)

    asyncio.run(scenario())
    assert len(spy.calls) == 1
    assert auth.pending == 0 and auth._flights == {}
    auth.close()


@pytest.mark.parametrize(("username", "password"), [("partner_mailco", "wrong"), ("nobody", "x")])
def test_a_failing_run_is_shared_too(registry: Registry, username: str, password: str) -> None:
    auth, spy = make_auth([registry], workers=1)
    spy.gate = threading.Event()

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(auth.verify_async(username, password)) for _ in range(8)]
        await asyncio.sleep(0)
        spy.gate.set()  # type: ignore[union-attr]
        assert await asyncio.gather(*tasks) == [None] * 8

    asyncio.run(scenario())
    assert len(spy.calls) == 1
    assert auth._flights == {} and auth.pending == 0
    auth.close()


def test_a_run_that_raises_gives_every_waiter_the_error_and_is_cleaned_up(registry: Registry) -> None:
    auth, spy = make_auth([registry], workers=1)
    spy.gate = threading.Event()
    spy.error = RuntimeError("boom")

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco")) for _ in range(4)]
        await asyncio.sleep(0)
        spy.gate.set()  # type: ignore[union-attr]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert auth._flights == {} and auth.pending == 0
        spy.error = None  # the next call is a fresh run, not the failed one
        assert await auth.verify_async("partner_mailco", "pw-partner_mailco") is not None

    asyncio.run(scenario())
    assert len(spy.calls) == 2
    auth.close()


def test_a_cancelled_waiter_does_not_cancel_the_shared_run(registry: Registry) -> None:
    auth, spy = make_auth([registry], workers=1)
    spy.gate = threading.Event()

    async def scenario() -> None:
        leaver = asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco"))
        stayer = asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco"))
        await asyncio.sleep(0)
        leaver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaver
        spy.gate.set()  # type: ignore[union-attr]
        found = await stayer
        assert found is not None and found.id == "mailco"

    asyncio.run(scenario())
    assert len(spy.calls) == 1
    assert auth._flights == {} and auth.pending == 0
    auth.close()


def test_a_queued_run_nobody_waits_for_any_more_is_dropped(registry: Registry) -> None:
    auth, spy = make_auth([registry], workers=1, max_pending=4)
    spy.gate = threading.Event()

    async def scenario() -> None:
        busy = asyncio.ensure_future(auth.verify_async("partner_mailco", "wrong"))
        while not spy.started.is_set():
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(auth.verify_async("trust_user", "pw-trust_user")) for _ in range(2)]
        await asyncio.sleep(0)
        assert auth.pending == 2
        for task in queued:
            task.cancel()
        for task in queued:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert auth.pending == 1 and len(auth._flights) == 1  # only the running one is left
        spy.gate.set()  # type: ignore[union-attr]
        assert await busy is None

    asyncio.run(scenario())
    assert len(spy.calls) == 1  # the cancelled queued run never reached argon2
    assert auth._flights == {} and auth.pending == 0
    auth.close()


def test_runs_for_different_registry_versions_are_not_shared(registry: Registry, sample_path: Path) -> None:
    ref = [registry]
    auth, spy = make_auth(ref, workers=2)
    spy.gate = threading.Event()

    async def scenario() -> None:
        before = asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco"))
        await asyncio.sleep(0)
        ref[0] = _reload(sample_path.read_text(), "alias: gp2alias", "alias: gp2renamed")
        after = asyncio.ensure_future(auth.verify_async("partner_mailco", "pw-partner_mailco"))
        await asyncio.sleep(0)
        assert len(auth._flights) == 2
        spy.gate.set()  # type: ignore[union-attr]
        assert (await before) is not None and (await after) is not None

    asyncio.run(scenario())
    assert len(spy.calls) == 2
    auth.close()


def test_guess_key_is_equal_for_equal_credentials_only(registry: Registry) -> None:
    auth, _ = make_auth([registry])
    key = auth.guess_key("partner_mailco", "pw-partner_mailco")
    assert key == auth.guess_key("partner_mailco", b"pw-partner_mailco") and len(key) == 32
    assert key != auth.guess_key("partner_mailco", "pw-partner_mailcO")
    assert key != auth.guess_key("partner_mailc", "opw-partner_mailco")
    assert b"pw-partner_mailco" not in key
    other, _ = make_auth([registry])
    assert other.guess_key("partner_mailco", "pw-partner_mailco") != key  # per-process key


def test_production_parameters_are_the_documented_ones() -> None:
    p = PRODUCTION_PARAMETERS
    assert (p.memory_cost, p.time_cost, p.parallelism) == (19456, 2, 1)
    assert (p.salt_len, p.hash_len, p.version) == (16, 32, 19)
    phc = hash_password("testing")
    assert phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PasswordHasher().verify(phc, "testing")
    doc = (REPO / "docs" / "registry.md").read_text()
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
