"""What the bus reports about its consumers against a real Kafka-wire broker (Tansu): the lag
of each partition a subscription holds, and dead letters counted by why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import REGISTRY

from infra.local.servers import KafkaWireServer
from lodestar.v1 import events_pb2
from services.platform import bus as bus_module
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.errors import PoisonMessage
from tests.support.kafka import eventually, group_lag, unique

Batch = Sequence[Delivery[events_pb2.Event]]


def config(kafka: KafkaWireServer, handler_retries: int = 2) -> BusConfig:
    return BusConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id="test",
        session_timeout_ms=2000,
        handler_retries=handler_retries,
        retry_backoff_ms=10,
    )


def event(event_id: str) -> events_pb2.Event:
    return events_pb2.Event(event_id=event_id, type=events_pb2.EVENT_TYPE_TRACK, name="Tested")


@pytest.fixture
async def bus(kafka_server: KafkaWireServer) -> AsyncIterator[Bus]:
    bus = Bus(config(kafka_server))
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def topic(kafka_server: KafkaWireServer) -> str:
    name = unique("test.bus-metrics")
    await ensure_topics(kafka_server.bootstrap_servers, {name: 3, topics.DEADLETTER: 3})
    return name


def lag(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "lodestar_consumer_lag", {"group": group, "topic": topic, "partition": str(partition)}
    )


def dead_lettered(group: str, topic: str, reason: str) -> float:
    labels = {"group": group, "topic": topic, "reason": reason}
    return REGISTRY.get_sample_value("lodestar_bus_dead_lettered_total", labels) or 0.0


async def test_the_lag_shows_a_batch_in_hand_and_clears_once_committed(
    bus: Bus, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measured at every fetch, so the test need not wait for the once-a-second pace.
    monkeypatch.setattr(bus_module, "LAG_INTERVAL_S", 0.0, raising=False)
    group = unique("g")
    release = asyncio.Event()
    holding = asyncio.Event()
    partitions: set[int] = set()

    async def holds_the_second_batch(batch: Batch) -> None:
        partitions.update(d.partition for d in batch)
        if any(d.message.event_id.startswith("later") for d in batch):
            holding.set()
            await release.wait()

    subscription = bus.subscribe([topic], group, events_pb2.Event, holds_the_second_batch)
    task = asyncio.create_task(subscription.run())
    try:
        await bus.publish(topic, "one-key", event("first"))

        async def caught_up() -> bool:
            values = [lag(group, topic, p) for p in range(3)]
            if not partitions or values != [0.0, 0.0, 0.0]:
                return False
            return await group_lag(bus.config.bootstrap_servers, group, topic) == 0

        # Every partition it holds is reported, none behind once the first is committed.
        await eventually(caught_up, 60, "a lag of 0 on the three partitions", 0.1)
        (partition,) = partitions
        for n in range(3):
            await bus.publish(topic, "one-key", event(f"later-{n}"))
        await asyncio.wait_for(holding.wait(), 60)
        held = lag(group, topic, partition)
        assert held is not None
        assert held >= 1
        release.set()

        async def cleared() -> bool:
            return lag(group, topic, partition) == 0.0

        await eventually(cleared, 60, "the lag back to 0 once the batch is committed", 0.1)
    finally:
        release.set()
        await subscription.stop()
        await asyncio.wait_for(task, 15)


async def test_dead_letters_are_counted_by_why(
    bus: Bus, topic: str, kafka_server: KafkaWireServer
) -> None:
    group = unique("g")
    before = {
        reason: dead_lettered(group, topic, reason)
        for reason in ("undecodable", "poison", "handler_failed")
    }
    await bus.publish_raw(topic, b"k", b"\xff" * 8)
    await bus.publish_many([(topic, "k", event(e)) for e in ("refused", "failing", "fine")])
    handled: list[str] = []

    async def handler(batch: Batch) -> None:
        ids = [d.message.event_id for d in batch]
        if "refused" in ids:
            raise PoisonMessage("refused on purpose")
        if "failing" in ids:
            raise ValueError("cannot handle failing")
        handled.extend(ids)

    fast = Bus(config(kafka_server, handler_retries=1))
    await fast.start()
    subscription = fast.subscribe([topic], group, events_pb2.Event, handler)
    task = asyncio.create_task(subscription.run())
    try:

        async def fine_handled() -> bool:
            if task.done():
                task.result()
            # One partition, in order: the three before it were dead-lettered by then.
            return handled == ["fine"]

        await eventually(fine_handled, 60, "the good message handled", 0.1)
    finally:
        await subscription.stop()
        await asyncio.wait_for(task, 15)
        await fast.stop()
    assert {reason: dead_lettered(group, topic, reason) - n for reason, n in before.items()} == {
        "undecodable": 1,
        "poison": 1,
        "handler_failed": 1,
    }
