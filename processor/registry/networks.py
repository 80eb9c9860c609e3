"""Source-address checks: ``allowed_networks`` and trusted ``X-Forwarded-For``.

Pure functions. Unparseable addresses never match a network (fail closed), and
IPv4-mapped IPv6 addresses (``::ffff:192.0.2.7``, what dual-stack sockets report
for IPv4 clients) are compared as the IPv4 address they carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from processor.registry.loader import normalise_network
from processor.registry.model import Network

__all__ = ["parse_address", "address_allowed", "client_address"]

_MAX_XFF_ENTRIES = 64


def parse_address(text: str) -> IPv4Address | IPv6Address | None:
    """An address from text, mapped IPv6 normalised to IPv4; None if not an address.

    Accepts the forms proxies write: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``,
    ``[::1]`` and ``[::1]:5678``.
    """
    value = text.strip()
    if not value or len(value) > 100:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (end + 1 < len(value) and not _is_port(value[end + 1 :])):
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # IPv4 with a port
        host, _, port = value.partition(":")
        if not port.isdigit():
            return None
        value = host
    try:
        addr = ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _is_port(suffix: str) -> bool:
    return suffix.startswith(":") and suffix[1:].isdigit() and len(suffix) <= 6


def _as_network(net: Network | str) -> Network | None:
    if isinstance(net, str):
        try:
            net = ip_network(net.strip(), strict=False)
        except ValueError:
            return None
    return normalise_network(net)


def address_allowed(address: str, networks: Iterable[Network | str]) -> bool:
    """True when ``networks`` is empty (any address) or one of them holds ``address``."""
    nets = [_as_network(x) for x in networks]  # an unparseable entry matches nothing
    if not nets:
        return True
    addr = parse_address(address)
    if addr is None:
        return False
    if isinstance(addr, IPv6Address) and addr.scope_id:
        addr = IPv6Address(str(addr).split("%", 1)[0])
    return any(n is not None and n.version == addr.version and addr in n for n in nets)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: Sequence[Network | str]) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy, then walk XFF.

    ``X-Forwarded-For`` is read right to left; each hop is believed only while the
    hop that reported it is a trusted proxy. The first untrusted address is the
    client. A malformed entry stops the walk at the trusted hop that forwarded it
    (never an attacker-chosen value); if every entry is a trusted proxy, the
    left-most one is returned.
    """
    peer_addr = parse_address(peer)
    if peer_addr is None:
        return peer
    proxies = [n for n in (_as_network(p) for p in trusted_proxies) if n is not None]
    current = peer_addr
    if not proxies or not forwarded_for or not _trusted(current, proxies):
        return str(current)
    hops = [h for h in forwarded_for.split(",")][-_MAX_XFF_ENTRIES:]
    for raw in reversed(hops):
        if not raw.strip():
            continue  # empty list items (",,") carry nothing
        hop = parse_address(raw)
        if hop is None:
            break
        current = hop
        if not _trusted(current, proxies):
            break
    return str(current)


def _trusted(addr: IPv4Address | IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(n.version == addr.version and addr in n for n in proxies)
