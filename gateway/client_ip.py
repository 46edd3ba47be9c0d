"""The address of the client that sent a request, for an event's ``context.ip``.

Without trusted proxies it is the TCP peer. Behind them (``LODESTAR_INGEST_TRUSTED_PROXIES``)
it is the right-most ``X-Forwarded-For`` address that no trusted proxy added: everything left
of it was written by the client and proves nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks(specs: Iterable[str]) -> list[Network]:
    """The networks of IP addresses or CIDR ranges (a plain address is a /32 or /128)."""
    return [ipaddress.ip_network(spec, strict=False) for spec in specs]


def _address(text: str) -> Address | None:
    """An IP address, allowing the ``1.2.3.4:port`` and ``[v6]:port`` forms; else ``None``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """The client's address: ``peer``, or when ``peer`` is a trusted proxy, the right-most
    untrusted address of ``forwarded_for`` (the last trusted hop where an entry is not an
    address, the farthest hop when all are trusted); ``""`` without a peer."""
    if not peer:
        return ""
    hop = _address(peer)
    if hop is None or not _trusted(hop, trusted):
        return peer
    for entry in reversed(forwarded_for.split(",") if forwarded_for.strip() else []):
        address = _address(entry)
        if address is None:
            break
        hop = address
        if not _trusted(address, trusted):
            break
    return str(hop)
