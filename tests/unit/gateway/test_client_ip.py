"""The client's address for context.ip: the peer, or behind trusted proxies the right-most
address of X-Forwarded-For that no trusted proxy added."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.client_ip import client_address, networks

PROXIES = networks(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # No proxy trusted: the peer, whatever the header claims.
        ("203.0.113.9", "1.2.3.4", [], "203.0.113.9"),
        ("10.1.1.1", "1.2.3.4", [], "10.1.1.1"),
        # An untrusted peer's header is ignored.
        ("203.0.113.9", "1.2.3.4", PROXIES, "203.0.113.9"),
        # Behind one trusted proxy: the address it saw.
        ("10.1.1.1", "198.51.100.7", PROXIES, "198.51.100.7"),
        # A client-made entry left of the real one is not believed.
        ("10.1.1.1", "1.1.1.1, 198.51.100.7", PROXIES, "198.51.100.7"),
        # Two trusted hops: skip the inner proxy.
        ("10.1.1.1", "1.1.1.1, 198.51.100.7, 192.0.2.1", PROXIES, "198.51.100.7"),
        ("10.1.1.1", "198.51.100.7,10.2.2.2", PROXIES, "198.51.100.7"),
        # Every hop trusted: the farthest one.
        ("10.1.1.1", "10.3.3.3, 10.2.2.2", PROXIES, "10.3.3.3"),
        # Junk where an address belongs stops the walk at the last trusted hop.
        ("10.1.1.1", "198.51.100.7, bogus, 10.2.2.2", PROXIES, "10.2.2.2"),
        ("10.1.1.1", "bogus", PROXIES, "10.1.1.1"),
        ("10.1.1.1", "", PROXIES, "10.1.1.1"),
        # Ports and brackets some proxies write.
        ("10.1.1.1", "198.51.100.7:5123", PROXIES, "198.51.100.7"),
        ("2001:db8::1", "[2001:db9::5]:443", PROXIES, "2001:db9::5"),
        ("2001:db8::1", "2001:db9::5", PROXIES, "2001:db9::5"),
        # No peer (a Unix socket): nothing known.
        (None, "1.2.3.4", PROXIES, ""),
    ],
)
def test_client_address(
    peer: str | None,
    forwarded: str,
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    expected: str,
) -> None:
    assert client_address(peer, forwarded, trusted) == expected
