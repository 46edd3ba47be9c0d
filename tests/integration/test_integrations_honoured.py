"""Segment's ``integrations`` honoured by segmentation's event consumer (real SecantusDB):
an event turned away from "Lodestar Segments" is neither stored nor evaluated, while the
profile, not a destination, still folds it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import MongoWireServer
from lodestar.v1 import events_pb2
from services.platform.bus import Delivery
from services.platform.mongo import Document, database, mongo_client
from services.profile.consumers import ResolvedEventHandler as ProfileEventHandler
from services.profile.store import ProfileStore
from services.segmentation.audience import Audiences
from services.segmentation.consumers import ResolvedEventHandler
from services.segmentation.rules import parse
from services.segmentation.segments import LIVE, Catalog, Segment
from services.segmentation.store import SegmentationStore
from tests.support.kafka import unique

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
async def store(mongo_server: MongoWireServer) -> AsyncIterator[SegmentationStore]:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    store = SegmentationStore(
        database(client, unique("int").replace("-", "_"), "segmentation"), 30 * 86_400
    )
    await store.ensure_indexes()
    yield store
    client.close()


def track(customer: str, event_id: str, integrations: dict[str, Any]) -> Delivery[events_pb2.Event]:
    event = events_pb2.Event(
        event_id=event_id,
        customer_id=customer,
        type=events_pb2.EVENT_TYPE_TRACK,
        name="Trial Started",
    )
    event.integrations.update(integrations)
    event.timestamp.FromDatetime(NOW)
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


async def test_events_kept_out_of_segments_are_neither_stored_nor_evaluated(
    store: SegmentationStore,
) -> None:
    rule = parse({"event": "Trial Started", "count": {"gte": 1}}, frozenset({"email"}))
    trial = Segment("trialists", "trialists", 1, rule, LIVE)
    audiences = Audiences(store, None, Catalog([trial]), clock=lambda: NOW)
    handler = ResolvedEventHandler(audiences)
    hidden, shown, named = unique("c"), unique("c"), unique("c")
    await handler(
        [
            track(hidden, "e1", {"All": False}),
            track(hidden, "e2", {"Lodestar Segments": False}),
            track(shown, "e3", {"All": False, "Lodestar Segments": True}),
            track(named, "e4", {"Lodestar Wallet": False}),
        ]
    )
    members = await store.memberships_of([hidden, shown, named])
    assert members[hidden] == {}
    assert set(members[shown]) == set(members[named]) == {"trialists"}
    assert await store.events.count_documents({"customer_id": hidden}) == 0
    assert await store.events.count_documents({"customer_id": shown}) == 1


async def test_the_profile_still_folds_events_kept_from_every_destination(
    mongo_server: MongoWireServer,
) -> None:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    try:
        profiles = ProfileStore(database(client, unique("int").replace("-", "_"), "profile"), 100)
        customer = unique("c")
        await ProfileEventHandler(profiles)(
            [track(customer, "e1", {"All": False}), track(customer, "e2", {"All": False})]
        )
        profile = await profiles.get(customer)
        assert profile is not None
        assert profile.event_counts == {"Trial Started": 2}
    finally:
        client.close()
