"""What recommendation's event handler sends MongoDB per batch (a real SecantusDB, its
commands seen by a pymongo command listener): one insert of the batch's interactions, and
item properties written only when they are new or changed, not for every batch that sees
the product again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import monitoring

from infra.local.servers import MongoWireServer
from lodestar.v1 import events_pb2
from services.platform.bus import Delivery
from services.platform.mongo import Document, database
from services.recommendation.consumers import ResolvedEventHandler
from services.recommendation.interactions import ItemProperties
from services.recommendation.store import SEEN_REFRESH, RecommendationStore
from tests.support.kafka import unique

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


class Writes(monitoring.CommandListener):
    """The statements of each write command sent, by collection."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Keep (command, collection, statements) of inserts and updates."""
        field = {"insert": "documents", "update": "updates"}.get(event.command_name)
        if field is not None:
            body = event.command
            self.sent.append((event.command_name, body[event.command_name], len(body[field])))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to keep."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to keep."""

    def take(self) -> list[tuple[str, str, int]]:
        """The writes since the last call."""
        sent, self.sent = self.sent, []
        return sorted(sent)


@pytest.fixture
def writes() -> Writes:
    return Writes()


@pytest.fixture
async def store(
    mongo_server: MongoWireServer, writes: Writes
) -> AsyncIterator[RecommendationStore]:
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_server.uri, tz_aware=True, event_listeners=[writes]
    )
    store = RecommendationStore(database(client, unique("rw").replace("-", "_"), "rec"))
    yield store
    client.close()


def track(event_id: str, event: str, **properties: Any) -> Delivery[events_pb2.Event]:
    props = Struct()
    props.update(properties)
    message = events_pb2.Event(
        event_id=event_id,
        customer_id="c1",
        type=events_pb2.EVENT_TYPE_TRACK,
        name=event,
        properties=props,
    )
    message.timestamp.FromDatetime(NOW)
    return Delivery("resolved", 0, 0, None, message.SerializeToString(), message)


def views(prefix: str, price: float = 10) -> list[Delivery[events_pb2.Event]]:
    """Three products viewed, a page view and a search (which feed no model)."""
    return [
        *(
            track(f"{prefix}-{sku}", "Product Viewed", product_id=sku, name=sku, price=price)
            for sku in ("p1", "p2", "p3")
        ),
        track(f"{prefix}-page", "Page Viewed", path="/"),
        track(f"{prefix}-search", "Products Searched", query="boots"),
    ]


async def test_items_seen_again_unchanged_are_not_written_again(
    store: RecommendationStore, writes: Writes
) -> None:
    handler = ResolvedEventHandler(store)
    await handler(views("a"))
    assert writes.take() == [("insert", "interactions", 3), ("update", "items", 3)]

    # The same products again, unchanged: their interactions only.
    await handler(views("b"))
    assert writes.take() == [("insert", "interactions", 3)]
    assert await store.count_interactions() == 6

    # A new price is written (for the three items whose price changed).
    await handler(views("c", price=12))
    assert writes.take() == [("insert", "interactions", 3), ("update", "items", 3)]
    found, _ = await store.items_changed_since(None)
    assert {i.price for i in found.values()} == {12}


async def test_unchanged_items_are_written_again_after_the_refresh_time(
    store: RecommendationStore, writes: Writes
) -> None:
    item = [ItemProperties("p1", name="Boots", price=10.0)]
    await store.save_seen_items(item, NOW)
    await store.save_seen_items(item, NOW + SEEN_REFRESH - timedelta(seconds=1))
    assert writes.take() == [("update", "items", 1)]
    await store.save_seen_items(item, NOW + SEEN_REFRESH)
    assert writes.take() == [("update", "items", 1)]
    # A field this store has not written yet is written.
    await store.save_seen_items([ItemProperties("p1", category="shoes")], NOW + SEEN_REFRESH)
    assert writes.take() == [("update", "items", 1)]
    found, _ = await store.items_changed_since(None)
    assert (found["p1"].name, found["p1"].category) == ("Boots", "shoes")


async def test_a_store_that_remembers_nothing_writes_every_item(
    mongo_server: MongoWireServer, writes: Writes
) -> None:
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_server.uri, tz_aware=True, event_listeners=[writes]
    )
    try:
        store = RecommendationStore(
            database(client, unique("rw").replace("-", "_"), "rec"), seen_cache_items=0
        )
        handler = ResolvedEventHandler(store)
        await handler(views("a"))
        await handler(views("b"))
    finally:
        client.close()
    assert writes.take() == [
        ("insert", "interactions", 3),
        ("insert", "interactions", 3),
        ("update", "items", 3),
        ("update", "items", 3),
    ]
