"""The identity and profile stores against a real MongoDB-wire server (SecantusDB)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from infra.local.servers import MongoWireServer
from services.platform.mongo import Document, database, mongo_client
from services.profile.fold import ProfileDelta
from services.profile.store import ProfileStore
from tests.support.kafka import unique

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def client(mongo_server: MongoWireServer) -> AsyncIterator[AsyncIOMotorClient[Document]]:
    client = mongo_client(mongo_server.uri, "tests")
    yield client
    client.close()


@pytest.fixture
def db(client: AsyncIOMotorClient[Document]) -> AsyncIOMotorDatabase[Document]:
    return database(client, unique("t").replace("-", "_"), "store")


def delta(event_id: str, customer: str = "c1", name: str = "Viewed", at: int = 0) -> ProfileDelta:
    return ProfileDelta(
        event_id=event_id,
        customer_id=customer,
        set_traits={"plan": f"p{at}"},
        count_increments={name: 1},
        seen_at=T0 + timedelta(minutes=at),
    )


async def test_profile_apply_is_idempotent_per_event(db: AsyncIOMotorDatabase[Document]) -> None:
    store = ProfileStore(db, dedupe_window=100)
    assert await store.apply([delta("e1"), delta("e2", at=5)]) == 2
    # Redelivery of a batch that overlaps what was stored: e2 again, e3 new.
    assert await store.apply([delta("e2", at=5), delta("e3", at=9), delta("e1")]) == 1
    profile = await store.get("c1")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 3}
    assert profile.first_seen == T0
    assert profile.last_seen == T0 + timedelta(minutes=9)
    assert profile.traits == {"plan": "p9"}  # e3 was the last new event; e1 again is a no-op


async def test_profile_same_event_twice_in_one_batch_counts_once(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=100)
    assert await store.apply([delta("dup"), delta("other", "c2"), delta("dup"), delta("dup")]) == 2
    profile = await store.get("c1")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 1}


async def test_profile_dedupe_window_is_bounded(db: AsyncIOMotorDatabase[Document]) -> None:
    store = ProfileStore(db, dedupe_window=3)
    await store.apply([delta(f"e{i}") for i in range(5)])
    raw = await db["profiles"].find_one({"_id": "c1"})
    assert raw is not None
    assert raw["recent_event_ids"] == ["e2", "e3", "e4"]


async def test_profile_names_with_dots_and_dollars_survive(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=10)
    from services.profile.fold import field_key

    odd = "$weird.event name"
    await store.apply(
        [
            ProfileDelta("x1", "c9", {field_key("a.b"): 1}, {field_key(odd): 1}, T0),
        ]
    )
    profile = await store.get("c9")
    assert profile is not None
    assert profile.event_counts == {odd: 1}
    assert profile.traits == {"a.b": 1}


async def test_profile_concurrent_redelivery_counts_once(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=100)
    await asyncio.gather(*(store.apply([delta("same")]) for _ in range(10)))
    profile = await store.get("c1")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 1}
