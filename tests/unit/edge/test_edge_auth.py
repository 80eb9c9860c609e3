"""HTTP Basic parsing and the failed-login limiter (pure)."""

from __future__ import annotations

from base64 import b64encode

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.edge.auth import USERNAME_LIMIT_FACTOR, LoginRateLimiter, parse_basic


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


def test_success_clears_username_failures_but_not_the_address() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(2, 30.0, clock=clock)
    threshold = 2 * USERNAME_LIMIT_FACTOR
    for i in range(threshold - 1):
        limiter.record_failure(f"10.0.0.{i}", "alice")
    limiter.record_success("alice")
    limiter.record_failure("10.0.1.1", "alice")  # would have been the locking failure
    assert limiter.retry_after(None, "alice") is None
    limiter.record_failure("a", "carol")
    limiter.record_success("carol")
    limiter.record_failure("a", "dave")
    assert limiter.retry_after("a", None) == 30  # the address keeps its count


def test_limiter_memory_is_bounded() -> None:
    limiter = LoginRateLimiter(5, 30.0, max_keys=100)
    for i in range(1000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}", f"user{i}")
    assert len(limiter) <= 100
