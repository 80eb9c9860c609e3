"""allowed_networks and trusted X-Forwarded-For handling."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.registry.networks import address_allowed, client_address, parse_address

NETS = (IPv4Network("203.0.113.0/24"), IPv6Network("2001:db8::/32"))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("203.0.113.7", True),
        ("203.0.114.7", False),
        ("::ffff:203.0.113.7", True),  # dual-stack socket view of an IPv4 client
        ("::ffff:203.0.114.7", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("[2001:db8::1]:443", True),
        ("203.0.113.7:5555", True),
        ("fe80::1%eth0", False),
        ("not-an-ip", False),
        ("", False),
        ("203.0.113.7 ", True),
    ],
)
def test_address_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(address, NETS) is allowed


def test_empty_networks_allow_any_address() -> None:
    assert address_allowed("198.51.100.1", ())
    assert address_allowed("::1", [])


def test_networks_may_be_strings_and_mapped() -> None:
    assert address_allowed("192.0.2.9", ["::ffff:192.0.2.0/120"])
    assert address_allowed("::ffff:192.0.2.9", ["192.0.2.0/24"])
    assert not address_allowed("192.0.2.9", ["garbage"])  # unparseable network matches nothing


def test_scoped_link_local() -> None:
    assert address_allowed("fe80::1%eth0", ["fe80::/10"])


TRUSTED = ["10.0.0.0/8", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # peer not trusted: XFF ignored entirely (it is client-controlled)
        ("198.51.100.9", "1.2.3.4", "198.51.100.9"),
        ("::ffff:198.51.100.9", "1.2.3.4", "198.51.100.9"),
        # one trusted proxy
        ("10.0.0.1", "198.51.100.9", "198.51.100.9"),
        ("::ffff:10.0.0.1", "198.51.100.9", "198.51.100.9"),
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "", "10.0.0.1"),
        # chain: client spoofs a left entry; right-most untrusted wins
        ("10.0.0.1", "6.6.6.6, 198.51.100.9, 10.0.0.2", "198.51.100.9"),
        ("10.0.0.1", "6.6.6.6,198.51.100.9", "198.51.100.9"),
        # every hop trusted: left-most
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),
        # malformed entries stop the walk at the trusted hop that forwarded them
        ("10.0.0.1", "198.51.100.9, garbage", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.9, garbage, 10.0.0.2", "10.0.0.2"),
        ("10.0.0.1", "unknown", "10.0.0.1"),
        # empty items are skipped
        ("10.0.0.1", "198.51.100.9, , ", "198.51.100.9"),
        # forms with ports / brackets, IPv6
        ("10.0.0.1", "[2001:db8::5]:1234", "2001:db8::5"),
        ("10.0.0.1", "198.51.100.9:4711", "198.51.100.9"),
        ("2001:db8:ffff::1", "2001:db8::5", "2001:db8::5"),
        ("2001:db8:ffff::1", "::ffff:198.51.100.9", "198.51.100.9"),
        # non-IP peer (e.g. unix socket) is returned as given
        ("unix:/run/sock", "1.2.3.4", "unix:/run/sock"),
    ],
)
def test_client_address(peer: str, xff: str | None, expected: str) -> None:
    assert client_address(peer, xff, TRUSTED) == expected


def test_no_trusted_proxies_means_xff_ignored() -> None:
    assert client_address("10.0.0.1", "1.2.3.4", []) == "10.0.0.1"


_ip = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
_entry = st.one_of(_ip, st.text(max_size=12), st.just("10.0.0.9"))


@settings(max_examples=300, deadline=None)
@given(peer=st.one_of(_ip, st.just("10.0.0.1"), st.text(max_size=10)), entries=st.lists(_entry, max_size=8))
def test_client_address_never_raises_and_never_invents(peer: str, entries: list[str]) -> None:
    xff = ", ".join(entries)
    result = client_address(peer, xff, TRUSTED)
    peer_addr = parse_address(peer)
    candidates = {str(parse_address(e)) for e in entries if parse_address(e) is not None}
    if peer_addr is None:
        assert result == peer
    else:
        assert result == str(peer_addr) or result in candidates
        if result != str(peer_addr):  # only ever taken from XFF behind a trusted peer
            assert any(
                peer_addr.version == n.version and peer_addr in n
                for n in (IPv4Network(TRUSTED[0]), IPv6Network(TRUSTED[1]))
            )
