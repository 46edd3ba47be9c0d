"""Segment's integrations rule for the destinations Lodestar owns."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct

from services.platform.destinations import OWNED, SEGMENTS, WALLET, allows, event_allows


@pytest.mark.parametrize(
    ("integrations", "segments", "wallet"),
    [
        ({}, True, True),
        ({"All": True}, True, True),
        ({"All": False}, False, False),
        ({"All": False, "Lodestar Wallet": True}, False, True),
        ({"Lodestar Segments": False}, False, True),
        ({"All": True, "Lodestar Segments": False}, False, True),
        ({"All": False, "Lodestar Segments": {"option": 1}}, True, False),
        ({"All": "no", "Lodestar Wallet": "yes"}, True, True),  # not switches: ignored
        ({"Google Analytics": False}, True, True),  # others' names change nothing here
    ],
)
def test_the_rule(integrations: dict[str, Any], segments: bool, wallet: bool) -> None:
    assert allows(integrations, SEGMENTS) is segments
    assert allows(integrations, WALLET) is wallet
    struct = Struct()
    struct.update(integrations)
    assert event_allows(struct, SEGMENTS) is segments
    assert event_allows(struct, WALLET) is wallet


def test_the_names_lodestar_owns() -> None:
    assert OWNED == ("Lodestar Segments", "Lodestar Wallet", "Lodestar Recommendations")
