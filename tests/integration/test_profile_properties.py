"""Property: folding the same resolved events in any order, redelivered, and cut into any
batches, against a real MongoDB-wire server, gives the same profiles as folding them once,
in order."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.servers import MongoWireServer
from services.platform.mongo import database, mongo_client
from services.profile.api import to_proto
from services.profile.fold import ResolvedEvent, fold
from services.profile.store import ProfileStore
from tests.support.identity import cipher
from tests.support.kafka import unique

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=30)
PII = frozenset({"email"})


@st.composite
def event_streams(draw: st.DrawFn) -> list[ResolvedEvent]:
    count = draw(st.integers(1, 16))
    minutes = draw(st.lists(st.integers(0, 10_000), min_size=count, max_size=count, unique=True))
    events = []
    for n, minute in enumerate(minutes):
        customer = draw(st.sampled_from(["c1", "c2"]))
        at = T0 + timedelta(minutes=minute)
        kind = draw(st.sampled_from(["identify", "track", "order", "refund"]))
        if kind == "identify":
            traits = draw(
                st.dictionaries(
                    st.sampled_from(["plan", "city", "email", "odd.key"]),
                    st.sampled_from(["a", "b", "$c", "x@y.example"]),
                    min_size=1,
                )
            )
            events.append(ResolvedEvent(f"e{n}", customer, "identify", "", at, traits=traits))
        elif kind == "track":
            name = draw(st.sampled_from(["Viewed", "Clicked", "Points Redeemed"]))
            events.append(
                ResolvedEvent(f"e{n}", customer, "track", name, at, properties={"points": 5})
            )
        elif kind == "order":
            events.append(
                ResolvedEvent(
                    f"e{n}",
                    customer,
                    "track",
                    "Order Completed",
                    at,
                    properties={
                        "order_id": f"o{n}",
                        "total": draw(st.integers(1, 900)),
                        "currency": "EUR",
                    },
                )
            )
        else:
            events.append(
                ResolvedEvent(
                    f"e{n}",
                    customer,
                    "track",
                    "Order Refunded",
                    at,
                    properties={"order_id": f"o{draw(st.integers(0, n))}", "total": 10},
                )
            )
    return events


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=event_streams(), data=st.data())
def test_any_order_and_redelivery_give_the_same_profiles(
    mongo_server: MongoWireServer, events: list[ResolvedEvent], data: st.DataObject
) -> None:
    in_order = sorted(events, key=lambda e: e.occurred_at)
    extra = data.draw(st.lists(st.sampled_from(events), max_size=6))
    delivered = data.draw(st.permutations(events + extra))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(delivered) - 1)), max_size=4)))
    expected = asyncio.run(_fold(mongo_server, [[e] for e in in_order]))
    bounds = [0, *cuts, len(delivered)]
    batches = [delivered[a:b] for a, b in itertools.pairwise(bounds) if delivered[a:b]]
    assert asyncio.run(_fold(mongo_server, batches)) == expected


async def _fold(mongo_server: MongoWireServer, batches: list[list[ResolvedEvent]]) -> Any:
    client = mongo_client(mongo_server.uri, "tests")
    try:
        store = ProfileStore(
            database(client, unique("pp").replace("-", "_"), "profile"), 100, cipher(), PII
        )
        for batch in batches:
            await store.apply([fold(e) for e in batch])
        profiles = {}
        for customer in ("c1", "c2"):
            stored = await store.get(customer)
            if stored is not None:
                reply = to_proto(stored, now=NOW)
                profiles[customer] = (
                    stored.traits,
                    stored.event_counts,
                    stored.first_seen,
                    stored.last_seen,
                    reply.orders.SerializeToString(deterministic=True),
                    reply.loyalty.SerializeToString(deterministic=True),
                )
        return profiles
    finally:
        client.close()
