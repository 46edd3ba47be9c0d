"""Far-future event times over real SecantusDB: neither a profile trait nor last seen (of the
profile or of an identifier) is frozen by them; a later normal event still moves them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient

from lodestar.v1 import common_pb2, events_pb2
from services.identity.consumers import event_identifiers
from services.platform.bus import Delivery
from services.platform.mongo import Document, database
from services.profile.consumers import ResolvedEventHandler
from services.profile.store import ProfileStore
from tests.support.identity import fresh_store, resolver
from tests.support.kafka import unique

FAR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def whole_ms(moment: datetime) -> datetime:
    """``moment`` at the millisecond precision MongoDB keeps."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def identify(
    event_id: str, customer: str, plan: str, timestamp: datetime, received: datetime
) -> Delivery[events_pb2.Event]:
    traits = Struct()
    traits.update({"plan": plan})
    event = events_pb2.Event(
        event_id=event_id,
        customer_id=customer,
        type=events_pb2.EVENT_TYPE_IDENTIFY,
        identifiers=[common_pb2.Identifier(type="user_id", value=f"u-{customer}")],
        traits=traits,
        source="test",
    )
    event.timestamp.FromDatetime(timestamp)
    event.received_at.FromDatetime(received)
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


async def test_far_future_event_cannot_freeze_a_profile(
    client: AsyncIOMotorClient[Document],
) -> None:
    store = ProfileStore(database(client, unique("clamp").replace("-", "_"), "profile"), 100)
    handler = ResolvedEventHandler(store)
    customer = unique("cust")
    received = whole_ms(datetime.now(UTC) - timedelta(hours=1))
    await handler([identify("e-far", customer, "frozen", FAR, received)])
    later = received + timedelta(minutes=10)
    await handler([identify("e-next", customer, "silver", later, later)])
    profile = await store.get(customer)
    assert profile is not None
    assert profile.traits == {"plan": "silver"}
    assert profile.last_seen == later


async def test_forged_far_future_receipt_cannot_pin_an_identifier_last_seen(
    client: AsyncIOMotorClient[Document],
) -> None:
    store = await fresh_store(client)
    r = resolver(store)  # last seen moves when a minute or more later
    user = unique("u")
    forged = identify("e-far", "", "x", FAR, FAR).message
    forged.identifiers[0].value = user
    await r.resolve([event_identifiers(forged)])
    later = datetime.now(UTC) + timedelta(minutes=2)  # within the clock allowance
    normal = identify("e-next", "", "x", later, later).message
    normal.identifiers[0].value = user
    await r.resolve([event_identifiers(normal)])
    await r.flush_last_seen()
    doc = await store.identifiers.find_one({"_id": f"user_id:{user}"})
    assert doc is not None
    assert doc["first_seen"] < later
    assert doc["last_seen"] == whole_ms(later)
