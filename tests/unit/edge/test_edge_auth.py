"""HTTP Basic parsing and the failed-login limiter (pure)."""

from __future__ import annotations

import threading
from base64 import b64encode

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.edge.auth import USERNAME_LIMIT_FACTOR, LoginAttempt, LoginRateLimiter, parse_basic, source_key


def basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_basic_reads_user_and_password() -> None:
    creds = parse_basic(basic("partner_mailco", "testing"))
    assert creds is not None
    assert (creds.username, creds.password) == ("partner_mailco", "testing")


def test_password_may_contain_colons_and_scheme_is_case_insensitive() -> None:
    creds = parse_basic("bAsIc " + b64encode(b"u:a:b:c").decode())
    assert creds is not None and creds.password == "a:b:c"


def test_repr_hides_the_password() -> None:
    creds = parse_basic(basic("zed_login", "s3cret"))
    assert "s3cret" not in repr(creds) and "zed_login" not in repr(creds)


def test_latin1_credentials_from_old_clients() -> None:
    creds = parse_basic("Basic " + b64encode("jos\u00e9:p\u00e4ss".encode("latin-1")).decode())
    assert creds is not None and creds.username == "jos\u00e9" and creds.password == "p\u00e4ss"


def test_unusable_headers_give_none() -> None:
    for header in (
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!notbase64",
        "Basic " + b64encode(b"no-colon").decode(),
        "Basic " + b64encode(b":empty-user").decode(),
        "Basic " + "A" * 5000,
    ):
        assert parse_basic(header) is None, header


@settings(max_examples=200)
@given(st.text(min_size=1).filter(lambda u: ":" not in u), st.text())
def test_parse_basic_round_trips(user: str, password: str) -> None:
    try:
        header = basic(user, password)
    except UnicodeEncodeError:  # lone surrogates cannot be sent
        return
    creds = parse_basic(header)
    if len(header) > 4096:
        assert creds is None
    else:
        assert creds is not None and (creds.username, creds.password) == (user, password)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_parse_basic_never_raises(header: str) -> None:
    parse_basic(header)


def test_limiter_locks_out_after_the_limit_and_releases_after_lockout() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(3, 30.0, clock=clock)
    for _ in range(2):
        limiter.record_failure("198.51.100.1", "alice")
        assert limiter.retry_after("198.51.100.1", "alice") is None
    limiter.record_failure("198.51.100.1", "alice")
    assert limiter.retry_after("198.51.100.1", "alice") == 30
    # the address is locked for every user; alice herself is not locked elsewhere yet
    assert limiter.retry_after("198.51.100.1", "bob") == 30
    assert limiter.retry_after("198.51.100.2", "alice") is None
    assert limiter.retry_after("198.51.100.2", "bob") is None
    clock.now += 29.5
    assert limiter.retry_after("198.51.100.1", None) == 1
    clock.now += 1
    assert limiter.retry_after("198.51.100.1", "alice") is None


def test_limiter_window_slides() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(3, 30.0, clock=clock)
    limiter.record_failure("a", None)
    limiter.record_failure("a", None)
    clock.now += 61  # the first two fall out of the 60 s window
    limiter.record_failure("a", None)
    limiter.record_failure("a", None)
    assert limiter.retry_after("a", None) is None
    limiter.record_failure("a", None)
    assert limiter.retry_after("a", None) == 30


def test_username_locks_only_after_failures_from_many_addresses() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(3, 30.0, clock=clock)
    threshold = 3 * USERNAME_LIMIT_FACTOR
    for i in range(threshold - 1):
        limiter.record_failure(f"198.51.100.{i}", "alice")
    # one client alone cannot lock alice out: its own address locks first
    assert limiter.retry_after("203.0.113.9", "alice") is None
    limiter.record_failure("198.51.100.200", "alice")
    assert limiter.retry_after("203.0.113.9", "alice") == 30
    assert limiter.retry_after("203.0.113.9", "bob") is None


def test_limiter_memory_is_bounded() -> None:
    limiter = LoginRateLimiter(5, 30.0, max_keys=100)
    for i in range(1000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}", f"user{i}")
    assert len(limiter) <= 100


# --- sources: IPv4 as is, IPv6 per /64 ------------------------------------------------------


def test_source_key_groups_ipv6_by_64_and_maps_ipv4() -> None:
    assert source_key("198.51.100.7") == "198.51.100.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:198.51.100.7") == "198.51.100.7"  # dual-stack socket view of IPv4
    assert source_key("[2001:db8:1:2::5]:443") == "2001:db8:1:2::/64"
    assert source_key("not-an-address") == "not-an-address"
    assert source_key("") == "" and source_key(None) == ""


def test_failures_across_one_ipv6_64_count_together() -> None:
    limiter = LoginRateLimiter(10, 60.0, clock=Clock())
    outcomes = []
    for i in range(30):
        attempt = limiter.try_begin(f"2001:db8:aa:bb::{i + 1:x}", f"user{i}")
        outcomes.append(attempt)
        if isinstance(attempt, LoginAttempt):
            attempt.failed()
    assert all(isinstance(a, LoginAttempt) for a in outcomes[:10])
    assert outcomes[10:] == [60] * 20  # the /64 is locked after 10, whichever address in it
    assert limiter.retry_after("2001:db8:aa:bb:1234::1", None) == 60
    assert limiter.retry_after("2001:db8:aa:bc::1", None) is None  # the next /64 is someone else


def test_ipv4_mapped_address_shares_the_ipv4_count() -> None:
    limiter = LoginRateLimiter(2, 30.0, clock=Clock())
    limiter.record_failure("::ffff:198.51.100.7", None)
    limiter.record_failure("198.51.100.7", None)
    assert limiter.retry_after("198.51.100.7", None) == 30
    assert limiter.retry_after("::ffff:198.51.100.7", None) == 30


# --- attempts counted as they start -------------------------------------------------------


def test_attempt_counts_from_its_start_and_success_takes_it_back() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(2, 30.0, clock=clock)
    first = limiter.try_begin("198.51.100.1", "alice")
    second = limiter.try_begin("198.51.100.1", "alice")
    assert isinstance(first, LoginAttempt) and isinstance(second, LoginAttempt)
    # two attempts in progress fill the address: the third waits, briefly (they end soon)
    assert limiter.try_begin("198.51.100.1", "bob") == 1
    assert limiter.retry_after("198.51.100.1", None) == 1
    first.succeeded()
    second.succeeded()
    assert limiter.retry_after("198.51.100.1", "alice") is None  # good logins never count
    again = limiter.try_begin("198.51.100.1", "alice")
    assert isinstance(again, LoginAttempt)
    again.failed()
    assert limiter.retry_after("198.51.100.1", None) is None  # one failure of two
    last = limiter.try_begin("198.51.100.1", "carol")
    assert isinstance(last, LoginAttempt)
    last.failed()
    assert limiter.retry_after("198.51.100.1", None) == 30  # the second failure locks


def test_attempt_outcome_is_idempotent_and_first_call_wins() -> None:
    limiter = LoginRateLimiter(2, 30.0, clock=Clock())
    attempt = limiter.try_begin("a", None)
    assert isinstance(attempt, LoginAttempt)
    attempt.failed()
    attempt.failed()
    attempt.succeeded()  # too late: still one failure
    assert limiter.retry_after("a", None) is None
    limiter.record_failure("a", None)
    assert limiter.retry_after("a", None) == 30


def test_attempt_left_unresolved_stays_counted_until_it_leaves_the_window() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(2, 30.0, clock=clock)
    for _ in range(2):
        assert isinstance(limiter.try_begin("a", None), LoginAttempt)  # dropped: never resolved
    assert limiter.try_begin("a", None) == 1
    clock.now += 61
    assert isinstance(limiter.try_begin("a", None), LoginAttempt)


def test_cancelled_attempt_is_forgotten() -> None:
    limiter = LoginRateLimiter(1, 30.0, clock=Clock())
    attempt = limiter.try_begin("a", "alice")
    assert isinstance(attempt, LoginAttempt)
    attempt.cancelled()  # e.g. the argon2 queue was full: nothing was checked
    attempt.failed()  # no effect after the first verdict
    assert limiter.retry_after("a", "alice") is None
    assert limiter.known_len() == 0  # and it did not make the address known


def test_a_hundred_concurrent_attempts_from_one_address_get_exactly_the_limit() -> None:
    limiter = LoginRateLimiter(10, 60.0)
    start = threading.Barrier(100)
    results: list[LoginAttempt | int] = []
    lock = threading.Lock()

    def guess(i: int) -> None:
        start.wait()
        outcome = limiter.try_begin("198.51.100.66", f"user{i % 3}")
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handles = [r for r in results if isinstance(r, LoginAttempt)]
    waits = [r for r in results if not isinstance(r, LoginAttempt)]
    assert len(handles) == 10
    assert len(waits) == 90 and all(isinstance(w, int) and w >= 1 for w in waits)
    for h in handles:
        h.failed()
    assert limiter.retry_after("198.51.100.66", None) == 60  # ten failures: locked out


def test_concurrent_successes_do_not_leave_a_lock() -> None:
    limiter = LoginRateLimiter(10, 60.0, clock=Clock())
    handles = [limiter.try_begin("192.0.2.10", "partner_mailco") for _ in range(10)]
    assert limiter.try_begin("192.0.2.10", "partner_mailco") == 1  # not the 60 s lock-out
    for h in handles:
        assert isinstance(h, LoginAttempt)
        h.succeeded()
    assert limiter.retry_after("192.0.2.10", "partner_mailco") is None


def test_success_does_not_lift_a_lock_made_by_failures() -> None:
    limiter = LoginRateLimiter(2, 30.0, clock=Clock())
    slow = limiter.try_begin("a", "alice")  # started before the lock
    assert isinstance(slow, LoginAttempt)
    limiter.record_failure("a", None)
    assert limiter.retry_after("a", None) == 1  # full: one failure, one in progress
    limiter.record_failure("a", None)
    assert limiter.retry_after("a", None) == 30  # two failures: locked
    slow.succeeded()
    assert limiter.try_begin("a", "alice") == 30


def test_failures_of_attempts_started_before_a_lock_still_count() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(2, 30.0, clock=clock)
    slow = [limiter.try_begin("a", None) for _ in range(2)]
    limiter.record_failure("a", None)
    limiter.record_failure("a", None)  # locked; the two in progress keep counting
    clock.now += 10
    for attempt in slow:
        assert isinstance(attempt, LoginAttempt)
        attempt.failed()  # two more failures: a new lock from now
    clock.now += 29
    assert limiter.retry_after("a", None) == 1
    clock.now += 1
    assert limiter.retry_after("a", None) is None


# --- a username lock never stops a source known for it -----------------------------------


def _fail(limiter: LoginRateLimiter, address: str, username: str) -> None:
    attempt = limiter.try_begin(address, username)
    assert isinstance(attempt, LoginAttempt), (address, attempt)
    attempt.failed()


def test_known_address_gets_in_while_the_username_is_locked_for_new_addresses() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(10, 60.0, clock=clock)
    partner = limiter.try_begin("192.0.2.10", "partner_mailco")
    assert isinstance(partner, LoginAttempt)
    partner.succeeded()
    clock.now += 3600
    for a in range(5):  # 5 addresses x 10 failures: the username's limit (10 x 5)
        for _ in range(10):
            _fail(limiter, f"203.0.113.{a + 1}", "partner_mailco")
    assert limiter.retry_after("203.0.113.99", "partner_mailco") == 60  # a new address waits
    assert limiter.try_begin("203.0.113.99", "partner_mailco") == 60
    assert limiter.retry_after("192.0.2.10", "partner_mailco") is None
    login = limiter.try_begin("192.0.2.10", "partner_mailco")
    assert isinstance(login, LoginAttempt)  # the partner's own feed keeps running
    login.succeeded()
    # the lock was not lifted by that success, and other usernames are untouched
    assert limiter.try_begin("203.0.113.99", "partner_mailco") == 60
    assert isinstance(limiter.try_begin("203.0.113.99", "partner_printco"), LoginAttempt)


def test_known_address_is_still_held_to_its_own_limit() -> None:
    limiter = LoginRateLimiter(3, 30.0, clock=Clock())
    ok = limiter.try_begin("192.0.2.10", "alice")
    assert isinstance(ok, LoginAttempt)
    ok.succeeded()
    for _ in range(3):
        _fail(limiter, "192.0.2.10", "alice")
    assert limiter.try_begin("192.0.2.10", "alice") == 30


def test_known_ipv6_source_is_its_64() -> None:
    limiter = LoginRateLimiter(2, 30.0, clock=Clock())
    ok = limiter.try_begin("2001:db8:5:6::10", "alice")
    assert isinstance(ok, LoginAttempt)
    ok.succeeded()
    for i in range(2 * USERNAME_LIMIT_FACTOR):
        _fail(limiter, f"198.51.100.{i}", "alice")
    assert limiter.retry_after("198.51.100.200", "alice") == 30
    assert limiter.retry_after("2001:db8:5:6::beef", "alice") is None  # new address, same /64
    assert limiter.retry_after("2001:db8:5:7::10", "alice") == 30


def test_known_address_expires() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(2, 30.0, known_address_seconds=3600.0, clock=clock)
    ok = limiter.try_begin("192.0.2.10", "alice")
    assert isinstance(ok, LoginAttempt)
    ok.succeeded()
    clock.now += 3601
    for i in range(2 * USERNAME_LIMIT_FACTOR):
        _fail(limiter, f"198.51.100.{i}", "alice")
    assert limiter.retry_after("192.0.2.10", "alice") == 30
    assert limiter.known_len() == 0


def test_known_pairs_are_bounded_least_recently_used_first() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(5, 30.0, max_known_pairs=3, clock=clock)

    def sign_in(address: str) -> None:
        attempt = limiter.try_begin(address, "alice")
        assert isinstance(attempt, LoginAttempt)
        attempt.succeeded()
        clock.now += 1

    for i in range(3):
        sign_in(f"192.0.2.{i}")
    sign_in("192.0.2.0")  # refreshed: now the most recent
    sign_in("192.0.2.9")  # evicts 192.0.2.1, the least recently used
    assert limiter.known_len() == 3
    for i in range(5 * USERNAME_LIMIT_FACTOR):
        _fail(limiter, f"198.51.100.{i}", "alice")
    assert limiter.retry_after("192.0.2.0", "alice") is None
    assert limiter.retry_after("192.0.2.9", "alice") is None
    assert limiter.retry_after("192.0.2.1", "alice") == 30


# --- the same guess repeated concurrently is one attempt ---------------------------------


def test_same_guess_in_flight_joins_instead_of_counting_again() -> None:
    limiter = LoginRateLimiter(10, 60.0, clock=Clock())
    burst = [limiter.try_begin("192.0.2.10", "partner_mailco", guess=b"k1") for _ in range(32)]
    assert all(isinstance(a, LoginAttempt) for a in burst)  # one partner, 32 connections
    others = [limiter.try_begin("192.0.2.10", "partner_mailco", guess=bytes([i])) for i in range(20)]
    assert sum(isinstance(a, LoginAttempt) for a in others) == 9  # k1 holds one of the 10
    for a in burst:
        a.succeeded()  # type: ignore[union-attr]
    assert isinstance(limiter.try_begin("192.0.2.10", None), LoginAttempt)


def test_joined_guess_that_fails_counts_once() -> None:
    limiter = LoginRateLimiter(3, 30.0, clock=Clock())
    burst = [limiter.try_begin("a", "alice", guess=b"wrong") for _ in range(5)]
    for a in burst:
        a.failed()  # type: ignore[union-attr]
    _fail(limiter, "a", "alice")
    assert limiter.retry_after("a", None) is None  # two failures of three
    # once settled, the same token is a new attempt again
    _fail(limiter, "a", "alice")
    assert limiter.retry_after("a", None) == 30


def test_cancelled_joiner_leaves_the_guess_to_the_others() -> None:
    limiter = LoginRateLimiter(1, 30.0, clock=Clock())
    first = limiter.try_begin("a", None, guess=b"g")
    second = limiter.try_begin("a", None, guess=b"g")
    assert isinstance(first, LoginAttempt) and isinstance(second, LoginAttempt)
    first.cancelled()
    assert limiter.try_begin("a", None, guess=b"other") == 1  # still counted for `second`
    second.failed()
    assert limiter.retry_after("a", None) == 30


def test_a_locked_key_refuses_even_a_joining_guess() -> None:
    limiter = LoginRateLimiter(2, 30.0, clock=Clock())
    held = limiter.try_begin("a", None, guess=b"g")
    assert isinstance(held, LoginAttempt)
    limiter.record_failure("a", None)
    limiter.record_failure("a", None)
    assert limiter.try_begin("a", None, guess=b"g") == 30
