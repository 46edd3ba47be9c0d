"""The wallet's update sequence on the real local MongoDB server: numbers taken at the same
time, also while the counter does not exist yet, are unique and every caller gets one. The
server can answer a concurrent first upsert with no document; a caller once waited for ever
on that (issuing cards stalled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import MongoWireServer
from services.platform.mongo import Document, database, mongo_client
from services.wallet.store import WalletStore
from tests.support.kafka import unique


@pytest.fixture
async def fresh_store(mongo_server: MongoWireServer) -> AsyncIterator[WalletStore]:
    """A wallet store over an empty database: no counter yet."""
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    yield WalletStore(database(client, unique("seq").replace("-", "_"), "wallet"))
    client.close()


async def _taken_after(store: WalletStore, turns: int) -> int:
    for _ in range(turns):
        await asyncio.sleep(0)  # a later turn of the loop: a new round trip, in flight at once
    return await store._next_seq()


async def test_numbers_taken_at_once_on_a_new_counter_are_unique(
    mongo_server: MongoWireServer,
) -> None:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    try:
        # Several new counters: the race of the first upserts does not happen every time.
        for _ in range(10):
            store = WalletStore(database(client, unique("seq").replace("-", "_"), "wallet"))
            callers = [_taken_after(store, n % 20) for n in range(200)]
            # Bounded only to turn a hang into a failure; it takes well under a second.
            numbers = await asyncio.wait_for(asyncio.gather(*callers), timeout=60)
            assert len(set(numbers)) == len(numbers) == 200
            assert min(numbers) >= 1
    finally:
        client.close()


async def test_batch_changes_on_a_new_counter_take_unique_numbers(
    fresh_store: WalletStore,
) -> None:
    takers = [fresh_store.take_seqs(5) for _ in range(20)]
    lasts = await asyncio.wait_for(asyncio.gather(*takers), timeout=60)
    ranges = [set(range(last - 4, last + 1)) for last in lasts]
    assert len(set().union(*ranges)) == 100
