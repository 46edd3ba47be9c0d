"""Every door of the local platform listens on loopback only, as ``make run`` starts it."""

from __future__ import annotations

import pytest

from infra.local.stack import SERVICES, Stack
from tests.support.sockets import listening_addresses

pytestmark = pytest.mark.e2e


def test_every_port_of_the_stack_is_bound_to_loopback(stack: Stack) -> None:
    ports = {
        "gateway": stack.ports.gateway,
        "passkit": stack.ports.passkit,
        "apns stand-in": stack.ports.apns,
        "google stand-in": stack.ports.google,
        **{f"{s} grpc": stack.ports.grpc[s] for s in SERVICES},
        **{f"{s} metrics": stack.ports.metrics[s] for s in SERVICES},
    }
    bound = {name: listening_addresses(port) for name, port in ports.items()}
    # Every door is up (so the check below is about something) ...
    assert all(bound.values()), {n: a for n, a in bound.items() if not a}
    # ... and none of them answers on another interface.
    assert {n: a for n, a in bound.items() if a != {"127.0.0.1"}} == {}
