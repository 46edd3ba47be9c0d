"""The profile consumer over real SecantusDB and Tansu: changes announced on
profile.changed with their paths, the watched values, and tier changes exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import KafkaWireServer, MongoWireServer
from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.mongo import Document, database, mongo_client
from services.profile.consumers import ResolvedEventHandler
from services.profile.store import ProfileStore
from tests.support.kafka import read_all, unique


@pytest.fixture
async def bus(kafka_server: KafkaWireServer) -> AsyncIterator[Bus]:
    await ensure_topics(kafka_server.bootstrap_servers, {topics.PROFILE_CHANGED: 6})
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, "test-profile"))
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def store(mongo_server: MongoWireServer) -> AsyncIterator[ProfileStore]:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    yield ProfileStore(database(client, unique("pc").replace("-", "_"), "profile"), 100)
    client.close()


def resolved(
    event_id: str, customer: str, name: str, **properties: Any
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
    event.timestamp.FromDatetime(datetime.now(UTC))
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


async def test_changes_are_announced_with_tier_changes_once(
    store: ProfileStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    customer = unique("cust")
    handler = ResolvedEventHandler(store, bus)
    first = [resolved(f"{customer}-v", customer, "Product Viewed")]
    await (await handler(first))  # type: ignore[misc]
    order = [
        resolved(
            f"{customer}-o1", customer, "Order Completed", order_id="o1", total=600, currency="EUR"
        )
    ]
    await (await handler(order))  # type: ignore[misc]
    await (await handler(order))  # type: ignore[misc]  # redelivered: no second tier change

    records = await read_all(kafka_server.bootstrap_servers, topics.PROFILE_CHANGED)
    changes = [events_pb2.ProfileChanged.FromString(r.value) for r in records]
    mine = [c for c in changes if c.customer_id == customer]
    assert [list(c.changed_paths) for c in mine] == [
        ["behaviour.sessions", "event_counts.Product Viewed"],
        [
            "behaviour.cart",
            "behaviour.sessions",
            "event_counts.Order Completed",
            "loyalty",
            "orders",
        ],
        [
            "behaviour.cart",
            "behaviour.sessions",
            "event_counts.Order Completed",
            "loyalty",
            "orders",
        ],
    ]
    assert [(c.tier_changed, c.old_tier, c.new_tier) for c in mine] == [
        (False, "", ""),
        (True, "Bronze", "Silver"),
        (False, "", ""),
    ]
    assert mine[1].loyalty.tier == "Silver"
    assert mine[1].loyalty.points == 600
    assert mine[1].event_id == mine[2].event_id  # the same batch again: the same change id
