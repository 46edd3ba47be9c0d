"""What the ingest door accepts lands: odd but legal keys and values, parsed by the gateway,
are folded into a profile and its timeline on real SecantusDB without an error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from gateway import jsonsafe
from gateway.segment import MAX_NESTING, parse_call
from services.platform.bus import Delivery
from services.platform.mongo import Document, database
from services.profile.consumers import ResolvedEventHandler
from services.profile.store import ProfileStore
from tests.support.kafka import unique

ODD: dict[str, Any] = {
    "a.b": 1,
    "$x": {"$y": 2, "c.d": [3, {"$": "."}]},
    "": {"": ""},
    " ": "\u0001\u001f\u2028",
    "é😀": "ü",
    "%2E": "%24",
    "_id": "not an id",
    "big": 10**299,
    "small": -1.5e-300,
    "flags": [True, False, None],
    "long": "x" * 5_000,
}


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("kind", "call"),
    [
        # Trait names are field names: every odd key but the empty one.
        ("identify", {"traits": {k: v for k, v in ODD.items() if k}}),
        ("identify", {"traits": {"t": deep(MAX_NESTING - 1)}}),
        ("identify", {"context": {"traits": {"$plan": "gold", "a.b": {"c.d": 1}}}}),
        ("track", {"event": "$weird.name %", "properties": ODD}),
        ("track", {"event": "Order Completed", "properties": {"order_id": "$o.1%", "total": 5}}),
        ("track", {"event": "deep", "properties": {"p": deep(MAX_NESTING - 1)}}),
        ("page", {"name": "$home.page", "properties": ODD}),
    ],
)
async def test_what_the_door_accepts_is_stored(
    client: AsyncIOMotorClient[Document], kind: str, call: dict[str, Any]
) -> None:
    raw = json.dumps({"userId": "u-1", **call}).encode()
    received = datetime.now(UTC)
    _, event = parse_call(jsonsafe.loads(raw), kind, received, max_bytes=32 * 1024)
    customer = unique("cust")
    event.customer_id = customer  # as identity resolves it
    store = ProfileStore(database(client, unique("lands").replace("-", "_"), "profile"), 100)
    delivery = Delivery("resolved", 0, 0, None, event.SerializeToString(), event)
    await ResolvedEventHandler(store)([delivery])
    profile = await store.get(customer)
    assert profile is not None
    assert abs(profile.last_seen - received) < timedelta(seconds=1)  # type: ignore[operator]
    page = await store.list_timeline(customer, 10, None)
    assert [doc["_id"] for doc in page] == [event.event_id]
    if kind == "track":
        assert profile.event_counts == {event.name: 1}
    if kind == "identify" and "traits" in call:
        assert set(profile.traits) == set(call["traits"])
