"""MongoDB answering slowly, then not at all, under the profile consumer while events stream
in: nothing dropped, nothing counted twice, nothing dead-lettered, the consumer's in-memory
work stays bounded, and the backlog drains once MongoDB is fast again.

The profile consumer is built as the service builds it (the bus, the real handler and store)
over the session's Tansu and SecantusDB, with a fault proxy between the store and SecantusDB.
The ``fast`` test runs in ``make test``; the full-size one is marked ``resilience_slow``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass

import pytest

from infra.local.servers import KafkaWireServer
from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, Pending, ensure_topics
from services.platform.mongo import database, mongo_client
from services.profile.consumers import ResolvedEventHandler
from services.profile.store import ProfileStore
from tests.resilience.conftest import proxied_mongo_uri
from tests.resilience.proxy import FaultProxy
from tests.support.kafka import eventually, group_lag, read_all, unique

NAME = "Resilience Tested"


class Watched:
    """Wraps the consumer's handler: counts the events it holds (handed to it and not yet
    settled, i.e. in memory between fetch and commit) and the most it ever held."""

    def __init__(self, handler: ResolvedEventHandler) -> None:
        self.handler = handler
        self.holding = 0
        self.most_held = 0
        self.handled_ids: set[str] = set()

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> Pending | None:
        self.holding += len(batch)
        self.most_held = max(self.most_held, self.holding)
        try:
            pending = await self.handler(batch)
        except BaseException:
            self.holding -= len(batch)
            raise
        self.handled_ids.update(d.message.event_id for d in batch)
        if pending is None:
            self.holding -= len(batch)
            return None
        return self._settle(pending, len(batch))

    async def _settle(self, pending: Awaitable[object], size: int) -> object:
        try:
            return await pending
        finally:
            self.holding -= size


@dataclass
class Run:
    """One consumer over the proxied store, reading its own input topic."""

    topic: str
    group: str
    bus: Bus
    store: ProfileStore
    watched: Watched
    max_batch: int


@pytest.fixture
async def run(kafka_server: KafkaWireServer, mongo_proxy: FaultProxy) -> AsyncIterator[Run]:
    topic = unique("resilience.resolved")
    await ensure_topics(
        kafka_server.bootstrap_servers,
        {topic: 6, topics.PROFILE_CHANGED: 6, topics.DEADLETTER: 6},
    )
    max_batch = 200
    bus = Bus(
        BusConfig(
            kafka_server.bootstrap_servers,
            "resilience-profile",
            max_batch=max_batch,
            retry_backoff_ms=50,
            session_timeout_ms=30_000,
        )
    )
    await bus.start()
    client = mongo_client(proxied_mongo_uri(mongo_proxy), "resilience")
    store = ProfileStore(database(client, unique("rs").replace("-", "_"), "profile"), 100)
    await store.ensure_indexes()
    watched = Watched(ResolvedEventHandler(store, bus))
    group = unique("resilience-profile")
    subscription = bus.subscribe([topic], group, events_pb2.Event, watched)
    task = asyncio.create_task(subscription.run())
    try:
        yield Run(topic, group, bus, store, watched, max_batch)
    finally:
        mongo_proxy.fast()
        await subscription.stop()
        await asyncio.wait_for(task, 60)
        await bus.stop()
        # Closing talks to the server through the proxy, which runs on this loop.
        await asyncio.to_thread(client.close)


def event(customer: str, n: int) -> events_pb2.Event:
    resolved = events_pb2.Event(
        event_id=f"{customer}-{n}",
        customer_id=customer,
        type=events_pb2.EVENT_TYPE_TRACK,
        name=NAME,
        source="resilience",
    )
    resolved.timestamp.GetCurrentTime()
    return resolved


async def send(run: Run, customers: Sequence[str], per_customer: int, chunk: int = 500) -> int:
    """Publish ``per_customer`` events for each customer, interleaved; returns how many."""
    records = [(run.topic, c, event(c, n)) for n in range(per_customer) for c in customers]
    for start in range(0, len(records), chunk):
        await run.bus.publish_many(records[start : start + chunk])
    return len(records)


async def drained(run: Run, kafka: KafkaWireServer, sent: int, timeout_s: float) -> None:
    """Every sent event handled and committed."""
    await eventually(
        lambda: _all_handled(run, sent), timeout_s, f"{sent} events handled", interval_s=0.5
    )

    async def committed() -> bool:
        return await group_lag(kafka.bootstrap_servers, run.group, run.topic) == 0

    await eventually(committed, 60, "the group's offsets committed", interval_s=1.0)


async def _all_handled(run: Run, sent: int) -> bool:
    return len(run.watched.handled_ids) >= sent


async def assert_exact(
    run: Run, kafka: KafkaWireServer, customers: Sequence[str], each: int
) -> None:
    """Every profile counts exactly what was sent, and nothing was dead-lettered."""
    profiles = await run.store.get_many(list(customers))
    counts = {c: (profiles[c].event_counts.get(NAME, 0) if c in profiles else 0) for c in customers}
    wrong = {c: n for c, n in counts.items() if n != each}
    assert wrong == {}, f"{len(wrong)} profiles do not count {each}: {list(wrong.items())[:5]}"
    letters = [
        events_pb2.DeadLetter.FromString(r.value)
        for r in await read_all(kafka.bootstrap_servers, topics.DEADLETTER)
    ]
    assert [letter.reason for letter in letters if letter.topic == run.topic] == []


OUTAGE_S = 10.0


async def test_slow_then_unreachable_mongo_loses_and_doubles_nothing(
    run: Run, mongo_proxy: FaultProxy, kafka_server: KafkaWireServer
) -> None:
    customers = [unique("rc") for _ in range(40)]
    each = 10
    mongo_proxy.slow(0.05)
    sent = await send(run, customers, each, chunk=100)
    # Some work goes through slowly, then MongoDB stops answering for a while.
    await eventually(
        lambda: _some_handled(run), 60, "the first batch handled through the slow proxy"
    )
    # Each fault lasts until it has hit the store's traffic, not for a set time.
    mongo_proxy.blackhole()
    await eventually(lambda: _held(mongo_proxy), 60, "store traffic held by the blackhole")
    delayed = mongo_proxy.stats.delayed_chunks
    mongo_proxy.slow(0.05)
    await eventually(lambda: _delayed_past(mongo_proxy, delayed), 60, "store traffic delayed again")
    mongo_proxy.fast()
    await drained(run, kafka_server, sent, 120)
    await assert_exact(run, kafka_server, customers, each)
    # The faults did hit the store's traffic: chunks were delayed and held.
    assert mongo_proxy.stats.delayed_chunks > 0
    assert mongo_proxy.stats.held_chunks > 0
    # The consumer holds at most the batch being handled and the one settling.
    assert run.watched.most_held <= 2 * run.max_batch


async def _some_handled(run: Run) -> bool:
    return len(run.watched.handled_ids) > 0


async def _held(proxy: FaultProxy) -> bool:
    return proxy.stats.held_chunks > 0


async def _delayed_past(proxy: FaultProxy, seen: int) -> bool:
    return proxy.stats.delayed_chunks > seen


@pytest.mark.resilience_slow
async def test_ten_thousand_events_through_a_slow_and_blackholed_mongo(
    run: Run, mongo_proxy: FaultProxy, kafka_server: KafkaWireServer
) -> None:
    customers = [unique("rc") for _ in range(1000)]
    each = 10
    mongo_proxy.slow(0.2)
    started = time.monotonic()
    sender = asyncio.create_task(send(run, customers, each))
    await eventually(lambda: _some_handled(run), 120, "work handled through the slow proxy")
    mongo_proxy.blackhole()
    await eventually(lambda: _held(mongo_proxy), 60, "store traffic held by the blackhole")
    # The outage itself is the fault under test: it lasts 10 s once it has bitten.
    await asyncio.sleep(OUTAGE_S)
    delayed = mongo_proxy.stats.delayed_chunks
    mongo_proxy.slow(0.05)
    await eventually(lambda: _delayed_past(mongo_proxy, delayed), 60, "store traffic delayed again")
    mongo_proxy.fast()
    sent = await sender
    await drained(run, kafka_server, sent, 600)
    print(
        f"\nslow mongo: {sent} events, drained {time.monotonic() - started:.1f}s after the "
        f"start, most held in memory {run.watched.most_held}"
    )
    await assert_exact(run, kafka_server, customers, each)
    assert mongo_proxy.stats.held_chunks > 0
    assert run.watched.most_held <= 2 * run.max_batch
