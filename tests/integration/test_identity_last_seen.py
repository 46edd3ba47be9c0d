"""The identity last-seen buffer over a real MongoDB-wire server: a failed flush keeps its
times for the next one, and the buffer is capped."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect

from services.identity.resolution import Resolver
from services.identity.store import IdentityStore
from services.platform.mongo import Document
from tests.support.identity import T0, event, fresh_store, resolver


@pytest.fixture
async def store(client: AsyncIOMotorClient[Document]) -> IdentityStore:
    return await fresh_store(client)


class Flushes:
    """Records what each flush writes; the first one fails after ``release`` once told to."""

    def __init__(self, store: IdentityStore, fail_first: bool) -> None:
        self.real = store.touch_last_seen
        self.fail_first = fail_first
        self.calls: list[dict[str, datetime]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def touch_last_seen(self, seen: Mapping[str, datetime]) -> None:
        self.calls.append(dict(seen))
        if self.fail_first and len(self.calls) == 1:
            self.entered.set()
            await self.release.wait()
            raise AutoReconnect("connection closed")
        await self.real(seen)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


async def test_failed_flush_keeps_its_times_merged_with_newer_ones(
    store: IdentityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = resolver(store)  # one-minute resolution
    await r.resolve([event("a0", ("user_id", "u-a"), minute=0)])
    await r.resolve([event("b0", ("user_id", "u-b"), minute=0)])
    await r.resolve([event("a5", ("user_id", "u-a"), minute=5)])
    await r.resolve([event("b6", ("user_id", "u-b"), minute=6)])
    flushes = Flushes(store, fail_first=True)
    monkeypatch.setattr(store, "touch_last_seen", flushes.touch_last_seen)

    failing = asyncio.create_task(r.flush_last_seen())
    await asyncio.wait_for(flushes.entered.wait(), 30)
    # Seen again while the write is in flight: u-a later than buffered, u-b earlier.
    await r.resolve([event("a9", ("user_id", "u-a"), minute=9)])
    await r.resolve([event("b2", ("user_id", "u-b"), minute=2)])
    flushes.release.set()
    with pytest.raises(AutoReconnect):
        await asyncio.wait_for(failing, 30)

    assert await r.flush_last_seen() == 2
    assert flushes.calls[0] == {"user_id:u-a": at(5), "user_id:u-b": at(6)}
    assert flushes.calls[1] == {"user_id:u-a": at(9), "user_id:u-b": at(6)}
    for key in ("user_id:u-a", "user_id:u-b"):
        doc = await store.identifiers.find_one({"_id": key})
        assert doc is not None
        assert doc["last_seen"] > doc["first_seen"], f"{key}: the failed flush's time was lost"
    assert await r.flush_last_seen() == 0  # written once: nothing left


async def test_buffer_is_capped_dropping_the_oldest_times(
    store: IdentityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = Resolver(store, store.rules, timedelta(minutes=1), max_buffered_last_seen=10)
    users = [f"u-cap-{i:02d}" for i in range(12)]
    for user in users:
        await r.resolve([event(f"first-{user}", ("user_id", user), minute=0)])
    flushes = Flushes(store, fail_first=False)
    monkeypatch.setattr(store, "touch_last_seen", flushes.touch_last_seen)
    before = REGISTRY.get_sample_value("lodestar_identity_last_seen_dropped_total") or 0.0

    for minute, user in enumerate(users, start=1):
        await r.resolve([event(f"again-{user}", ("user_id", user), minute=minute)])

    dropped = REGISTRY.get_sample_value("lodestar_identity_last_seen_dropped_total")
    # The 11th goes over the cap of 10: cut to 9, the two oldest go; the 12th makes 10.
    assert dropped == before + 2
    assert await r.flush_last_seen() == 10
    kept = list(enumerate(users, start=1))[2:]
    assert flushes.calls == [{f"user_id:{user}": at(minute) for minute, user in kept}]
