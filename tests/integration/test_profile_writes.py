"""What the profile consumer sends MongoDB per batch (a real SecantusDB, its commands seen
by a pymongo command listener): each customer's profile written once, with update
operators where nothing depends on the stored value, and no write the profile just read
makes needless."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import monitoring

from infra.local.servers import KafkaWireServer, MongoWireServer
from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.mongo import Document, database
from services.profile.consumers import ResolvedEventHandler
from services.profile.store import ProfileStore
from tests.support.kafka import unique

T0 = datetime(2026, 5, 1, tzinfo=UTC)


class Commands(monitoring.CommandListener):
    """The commands sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Document]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Keep the command (handshakes and session ends aside)."""
        if event.command_name not in ("hello", "isMaster", "ismaster", "endSessions", "ping"):
            self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to keep."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to keep."""

    def named(self, name: str) -> list[Document]:
        """The commands of one name."""
        return [body for n, body in self.sent if n == name]


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def store(mongo_server: MongoWireServer, commands: Commands) -> AsyncIterator[ProfileStore]:
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_server.uri, tz_aware=True, event_listeners=[commands]
    )
    yield ProfileStore(database(client, unique("pw").replace("-", "_"), "profile"), 100)
    client.close()


def resolved(
    event_id: str, customer: str, name: str, minute: int, **properties: Any
) -> Delivery[events_pb2.Event]:
    props = Struct()
    props.update(properties)
    event = events_pb2.Event(
        event_id=event_id,
        customer_id=customer,
        name=name,
        type=events_pb2.EVENT_TYPE_TRACK,
        properties=props,
        source="web",
    )
    event.timestamp.FromDatetime(T0 + timedelta(minutes=minute))
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


async def test_a_batch_writes_each_profile_once_with_update_operators(
    store: ProfileStore, commands: Commands
) -> None:
    batch = []
    for c in ("a", "b", "c"):
        batch += [
            resolved(f"{c}-1", c, "Product Viewed", 1, product_id="p1"),
            resolved(f"{c}-2", c, "Product Added", 2, product_id="p1"),
            resolved(f"{c}-3", c, "Order Completed", 3, order_id=f"o-{c}", total=20),
        ]
    commands.sent.clear()
    await ResolvedEventHandler(store)(batch)

    updates = [u for body in commands.named("update") for u in body["updates"]]
    assert sorted(u["q"]["_id"] for u in updates) == ["a", "b", "c"]  # one write per customer
    # Operators, not an update pipeline (a list): the server does them in half the time.
    assert all(isinstance(u["u"], dict) for u in updates)
    inserts = commands.named("insert")
    assert [len(body["documents"]) for body in inserts] == [9]  # the timeline, in one insert
    profile = await store.get("b")
    assert profile is not None
    assert profile.event_counts == {"Product Viewed": 1, "Product Added": 1, "Order Completed": 1}
    assert profile.cart["last_added"] == {"at": T0 + timedelta(minutes=2), "product_id": "p1"}
    assert profile.cart["last_ordered"] == {"at": T0 + timedelta(minutes=3)}
    assert [o.order_id for o in profile.orders] == ["o-b"]
    assert (profile.first_seen, profile.last_seen) == (
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=3),
    )
    assert profile.sources == ["web"]
    assert profile.sessions.count == 1


async def test_operator_writes_keep_the_later_cart_and_apply_redeliveries_once(
    store: ProfileStore,
) -> None:
    handler = ResolvedEventHandler(store)
    newer = [resolved("n-1", "c1", "Product Added", 30, product_id="new")]
    older = [resolved("o-1", "c1", "Product Added", 10, product_id="old")]
    await handler(newer)
    await handler(older)  # arrives late: counted, but the cart keeps the newer addition
    await handler(newer + older)  # both redelivered in one batch: nothing changes
    profile = await store.get("c1")
    assert profile is not None
    assert profile.event_counts == {"Product Added": 2}
    assert profile.cart["last_added"] == {"at": T0 + timedelta(minutes=30), "product_id": "new"}
    assert (profile.first_seen, profile.last_seen) == (
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=30),
    )
    # A customer merged away: their events in flight land on the survivor, once.
    await store.merge("m-1", "c1", ["c2"])
    late = [resolved("l-1", "c2", "Product Added", 40, product_id="late")]
    await handler(late)
    await handler(late)
    survivor = await store.get("c1")
    assert survivor is not None
    assert survivor.event_counts == {"Product Added": 3}
    assert survivor.cart["last_added"] == {"at": T0 + timedelta(minutes=40), "product_id": "late"}


async def test_an_unchanged_tier_is_not_written_again(
    store: ProfileStore, commands: Commands, kafka_server: KafkaWireServer
) -> None:
    await ensure_topics(kafka_server.bootstrap_servers, {topics.PROFILE_CHANGED: 6})
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, unique("test-profile-writes")))
    await bus.start()
    try:
        handler = ResolvedEventHandler(store, bus)
        commands.sent.clear()
        for n in range(3):
            order = resolved(f"o{n}", "c1", "Order Completed", n, order_id=f"o{n}", total=10)
            await (await handler([order]))  # type: ignore[misc]
    finally:
        await bus.stop()
    # 10 EUR per order stays in the base tier, and the profile read for each announcement
    # says so: no tier write at all.
    assert commands.named("findAndModify") == []
    profile = await store.get("c1")
    assert profile is not None
    assert len(profile.orders) == 3


async def test_an_order_whose_products_hold_odd_keys_is_stored_as_data(
    store: ProfileStore, commands: Commands
) -> None:
    products = [{"$price": 5, "a.b": "x", "sku": "$sku"}]
    order = resolved("o-odd", "c1", "Order Completed", 1, order_id="o1", total=5, products=products)
    commands.sent.clear()
    await ResolvedEventHandler(store)([order])
    # Keys operators would read as paths: the update stays a pipeline, values literal.
    updates = [u for body in commands.named("update") for u in body["updates"]]
    assert [type(u["u"]) for u in updates] == [list]
    raw = await store.profiles.find_one({"_id": "c1"})
    assert raw is not None
    assert raw["orders"]["o1"]["products"] == products
