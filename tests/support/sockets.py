"""Which local addresses listen on a TCP port, read from the kernel (Linux ``/proc/net``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

_LISTEN = "0A"


def _address(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if family == 4:
        return str(ipaddress.IPv4Address(words))
    address = ipaddress.IPv6Address(words)
    # An IPv6 socket bound to an IPv4 address (gRPC does this) shows it IPv4-mapped.
    return str(address.ipv4_mapped or address)


def listening_addresses(port: int) -> set[str]:
    """The addresses with a listening TCP socket on ``port`` (``0.0.0.0``/``::`` = all)."""
    found: set[str] = set()
    for name, family in (("tcp", 4), ("tcp6", 6)):
        table = Path("/proc/net") / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, port_hex = local.partition(":")
            if state == _LISTEN and int(port_hex, 16) == port:
                found.add(_address(address, family))
    return found
