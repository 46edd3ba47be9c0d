"""The gateway's live hub against a real Kafka-wire broker (Tansu): each replica's hub reads
every partition from the latest offset without a group, so two hubs both see every event,
and the wallet's pass events (installed, removed, pushed) arrive for the customer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

import pytest
from aiokafka import AIOKafkaProducer

from gateway.live import LIVE_TOPICS, LiveEvent, LiveHub, PassChange, Subscriber, Watch
from infra.local.servers import KafkaWireServer
from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, ensure_topics
from services.wallet.feedback import WalletFeedback
from services.wallet.records import StoredPass
from tests.support.kafka import partitions_of, unique


@pytest.fixture
async def bootstrap(kafka_server: KafkaWireServer) -> str:
    await ensure_topics(
        kafka_server.bootstrap_servers,
        {**dict.fromkeys(LIVE_TOPICS, 6), topics.EVENTS_RAW: 6},
    )
    return kafka_server.bootstrap_servers


@pytest.fixture
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def next_events(subscriber: Subscriber, count: int) -> list[LiveEvent]:
    """The next ``count`` events (a hang guard, not a timing check)."""
    return [await asyncio.wait_for(subscriber.next(), 30) for _ in range(count)]


async def test_two_hubs_each_see_every_partition_from_the_latest_offset(
    bootstrap: str, producer: AIOKafkaProducer
) -> None:
    customer = unique("live")
    before = events_pb2.ProfileChanged(event_id="before", customer_id=customer, changed_paths=["a"])
    await producer.send_and_wait(topics.PROFILE_CHANGED, before.SerializeToString())
    partitions = await partitions_of(bootstrap, topics.PROFILE_CHANGED)
    first, second = LiveHub(bootstrap, 100), LiveHub(bootstrap, 100)
    await first.start()
    await second.start()
    try:
        assert {p for p in first.assigned if p.topic == topics.PROFILE_CHANGED} == set(partitions)
        async with (
            first.watch(Watch.CUSTOMER, customer) as one,
            second.watch(Watch.CUSTOMER, customer) as other,
        ):
            # One change on every partition (a customer's own changes share one partition;
            # other customers' land on all of them).
            for p in partitions:
                message = events_pb2.ProfileChanged(
                    event_id=f"p{p.partition}", customer_id=customer, changed_paths=["traits.x"]
                )
                await producer.send_and_wait(
                    topics.PROFILE_CHANGED, message.SerializeToString(), partition=p.partition
                )
            expected = {f"p{p.partition}" for p in partitions}
            assert {e.event_id for e in await next_events(one, len(partitions))} == expected
            assert {e.event_id for e in await next_events(other, len(partitions))} == expected
            # What was there before the hubs started is never delivered.
            assert one.pending() == 0
            assert other.pending() == 0
    finally:
        await first.stop()
        await second.stop()


async def test_the_wallets_pass_events_reach_the_customers_subscribers(bootstrap: str) -> None:
    customer = unique("holder")
    bus = Bus(BusConfig(bootstrap_servers=bootstrap, client_id="test-wallet"))
    await bus.start()
    hub = LiveHub(bootstrap, 100)
    await hub.start()
    doc = cast(
        StoredPass,
        {
            "_id": unique("serial"),
            "customer_id": customer,
            "platform": "apple",
            "kind": "STORE_CARD",
            "pass_type_id": "pass.test",
            "update_seq": 7,
        },
    )
    feedback = WalletFeedback(bus)
    try:
        async with hub.watch(Watch.PASSES, customer) as subscriber:
            await feedback.installed(doc, "device-1")
            await feedback.pushed(doc)
            await feedback.pushed(doc)
            await feedback.removed(doc, "device-1", "unregistered")
            events = await next_events(subscriber, 4)
    finally:
        await hub.stop()
        await bus.stop()
    assert all(isinstance(e, PassChange) for e in events)
    kinds = [(e.kind, e.serial_number, e.platform) for e in events if isinstance(e, PassChange)]
    assert kinds == [
        ("INSTALLED", doc["_id"], "APPLE"),
        ("PUSHED", doc["_id"], "APPLE"),
        ("PUSHED", doc["_id"], "APPLE"),
        ("REMOVED", doc["_id"], "APPLE"),
    ]
    # The same pass version pushed twice carries the same id: a consumer can tell repeats.
    ids = [e.event_id for e in events]
    assert ids[1] == ids[2]
    assert len({ids[0], ids[1], ids[3]}) == 3
    now = datetime.now(UTC)
    assert all(e.at is not None and abs((now - e.at).total_seconds()) < 600 for e in events)
