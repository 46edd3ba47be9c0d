"""The live hub: decoding the three topics, fan-out by key, bounded queues that drop a slow
subscriber while a fast one keeps receiving, and one group-less consumer assigned every
partition from the latest offsets (a fake consumer records what the hub asked of it)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from aiokafka import TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from gateway.live import (
    LIVE_TOPICS,
    CustomerChange,
    FellBehind,
    LiveHub,
    MembershipChange,
    PassChange,
    Watch,
    decode,
)
from lodestar.v1 import events_pb2
from services.platform import topics

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def stamp() -> Timestamp:
    at = Timestamp()
    at.FromDatetime(AT)
    return at


def dropped_count() -> float:
    value = REGISTRY.get_sample_value(
        "lodestar_gateway_live_events_total", {"watch": "customer", "outcome": "dropped"}
    )
    return value or 0.0


def change(customer_id: str, n: int = 0) -> CustomerChange:
    return CustomerChange(f"e{n}", customer_id, (f"traits.t{n}",), AT)


def test_profile_changed_decodes_to_the_changed_fields_of_the_customer() -> None:
    message = events_pb2.ProfileChanged(
        event_id="e1",
        customer_id="c1",
        changed_paths=["traits.plan", "loyalty", "traits.plan"],
        changed_at=stamp(),
    )
    assert decode(topics.PROFILE_CHANGED, message.SerializeToString()) == (
        (Watch.CUSTOMER, "c1"),
        CustomerChange("e1", "c1", ("loyalty", "traits.plan"), AT),
    )


def test_membership_decodes_to_an_entry_or_exit_of_the_segment() -> None:
    message = events_pb2.SegmentMembershipChanged(
        event_id="e2",
        customer_id="c1",
        segment_id="s1",
        change=events_pb2.MEMBERSHIP_CHANGE_EXITED,
        at=stamp(),
    )
    assert decode(topics.SEGMENTS_MEMBERSHIP, message.SerializeToString()) == (
        (Watch.SEGMENT, "s1"),
        MembershipChange("e2", "s1", "c1", False, AT),
    )


def test_pass_event_decodes_to_the_customers_passes() -> None:
    message = events_pb2.PassEvent(
        event_id="e3",
        customer_id="c1",
        serial_number="SER",
        platform="APPLE",
        kind=events_pb2.PASS_EVENT_KIND_PUSHED,
        at=stamp(),
    )
    assert decode(topics.WALLET_PASS_EVENTS, message.SerializeToString()) == (
        (Watch.PASSES, "c1"),
        PassChange("e3", "c1", "SER", "APPLE", "PUSHED", AT),
    )


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        (topics.PROFILE_CHANGED, events_pb2.ProfileChanged(event_id="e")),
        (topics.SEGMENTS_MEMBERSHIP, events_pb2.SegmentMembershipChanged(segment_id="s")),
        (topics.WALLET_PASS_EVENTS, events_pb2.PassEvent(customer_id="c")),
        (topics.EVENTS_RAW, events_pb2.Event(event_id="e")),
    ],
    ids=["no-customer", "no-change", "no-kind", "other-topic"],
)
def test_records_with_nothing_to_watch_decode_to_none(topic: str, message: Any) -> None:
    assert decode(topic, message.SerializeToString()) is None


def test_an_undecodable_record_is_skipped_and_the_next_one_delivered() -> None:
    hub = LiveHub("unused:9092", 10)

    async def run() -> CustomerChange | MembershipChange | PassChange:
        async with hub.watch(Watch.CUSTOMER, "c1") as subscriber:
            hub.receive(topics.PROFILE_CHANGED, 0, 1, b"\xff\xff\xff not protobuf")
            hub.receive(topics.PROFILE_CHANGED, 0, 2, None)
            good = events_pb2.ProfileChanged(event_id="e", customer_id="c1", changed_paths=["x"])
            hub.receive(topics.PROFILE_CHANGED, 0, 3, good.SerializeToString())
            assert subscriber.pending() == 1
            return await subscriber.next()

    assert asyncio.run(run()) == CustomerChange("e", "c1", ("x",), None)


async def test_records_nobody_watches_are_not_decoded(caplog: pytest.LogCaptureFixture) -> None:
    # Undecodable bytes show whether a record was decoded: decoding them logs a warning.
    hub = LiveHub("unused:9092", 10)
    garbage = b"\xff\xff\xff not protobuf"
    async with hub.watch(Watch.CUSTOMER, "c1"):
        hub.receive(topics.PROFILE_CHANGED, 0, 1, garbage, key=b"c2")
        hub.receive(topics.WALLET_PASS_EVENTS, 0, 2, garbage, key=b"c1")
        hub.receive(topics.SEGMENTS_MEMBERSHIP, 0, 3, garbage, key=b"c1")
        assert "undecodable" not in caplog.text
        hub.receive(topics.PROFILE_CHANGED, 0, 4, garbage, key=b"c1")
        assert "undecodable" in caplog.text
    caplog.clear()
    hub.receive(topics.PROFILE_CHANGED, 0, 5, garbage, key=b"c1")
    assert "undecodable" not in caplog.text


async def test_an_event_reaches_every_subscriber_of_its_key_and_no_other() -> None:
    hub = LiveHub("unused:9092", 10)
    async with (
        hub.watch(Watch.CUSTOMER, "c1") as first,
        hub.watch(Watch.CUSTOMER, "c1") as second,
        hub.watch(Watch.CUSTOMER, "c2") as other,
        hub.watch(Watch.PASSES, "c1") as passes,
    ):
        hub.dispatch((Watch.CUSTOMER, "c1"), change("c1"))
        assert await first.next() == change("c1")
        assert await second.next() == change("c1")
        assert other.pending() == 0
        assert passes.pending() == 0
        assert hub.subscriber_count() == 4
    assert hub.subscriber_count() == 0


async def test_a_full_queue_drops_the_slow_subscriber_while_a_fast_one_keeps_receiving() -> None:
    hub = LiveHub("unused:9092", 3)
    dropped_before = dropped_count()
    received: list[CustomerChange | MembershipChange | PassChange] = []
    async with hub.watch(Watch.CUSTOMER, "c1") as slow, hub.watch(Watch.CUSTOMER, "c1") as fast:
        for n in range(10):
            hub.dispatch((Watch.CUSTOMER, "c1"), change("c1", n))
            received.append(await fast.next())
        # The fourth event found the slow queue full: dropped at once, its backlog freed.
        assert slow.dropped
        assert slow.pending() == 1
        assert hub.subscriber_count() == 1
        with pytest.raises(FellBehind, match="more than 3 events waiting"):
            await slow.next()
        # It stays ended, and later events no longer reach it.
        hub.dispatch((Watch.CUSTOMER, "c1"), change("c1", 99))
        with pytest.raises(FellBehind):
            await slow.next()
        assert await fast.next() == change("c1", 99)
    assert received == [change("c1", n) for n in range(10)]
    assert dropped_count() == dropped_before + 1


class FakeConsumer:
    """Records what the hub asks of its consumer; serves no records."""

    made: ClassVar[list[FakeConsumer]] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.assigned: list[TopicPartition] = []
        self.sought: list[TopicPartition] = []
        self.positions: list[TopicPartition] = []
        self.stopped = False
        self.polls = asyncio.Event()
        # Batches getmany serves, one per poll.
        self.batches: list[dict[TopicPartition, list[Any]]] = []
        FakeConsumer.made.append(self)

    async def start(self) -> None:
        pass

    async def topics(self) -> set[str]:
        return set(LIVE_TOPICS)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(6)) if topic != topics.WALLET_PASS_EVENTS else {0, 1, 2}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        self.sought = list(partitions)

    async def position(self, partition: TopicPartition) -> int:
        self.positions.append(partition)
        return 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.polls.set()
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.01)
        return {}

    async def stop(self) -> None:
        self.stopped = True


async def test_one_consumer_without_a_group_is_assigned_every_partition_from_the_end() -> None:
    FakeConsumer.made.clear()
    hub = LiveHub("kafka:9092", 10, consumer_factory=FakeConsumer)
    await hub.start()
    try:
        [consumer] = FakeConsumer.made
        assert consumer.config["group_id"] is None
        assert consumer.config["enable_auto_commit"] is False
        assert consumer.config["auto_offset_reset"] == "latest"
        expected = {
            TopicPartition(topic, n)
            for topic in (topics.PROFILE_CHANGED, topics.SEGMENTS_MEMBERSHIP)
            for n in range(6)
        } | {TopicPartition(topics.WALLET_PASS_EVENTS, n) for n in range(3)}
        assert set(consumer.assigned) == expected
        assert len(consumer.assigned) == 15
        assert set(consumer.sought) == expected
        assert set(consumer.positions) == expected
        assert set(hub.assigned) == expected
        await asyncio.wait_for(consumer.polls.wait(), 10)
    finally:
        await hub.stop()
    assert consumer.stopped


@dataclass
class Record:
    offset: int
    value: bytes
    key: bytes | None = None


async def test_a_burst_in_one_poll_does_not_overflow_a_subscriber_that_keeps_up() -> None:
    # A segment recomputed gives hundreds of events on one key in one poll; a subscriber
    # taking each as it comes must not be dropped for the size of the poll (before: the
    # whole poll was dispatched at once and it was).
    FakeConsumer.made.clear()
    hub = LiveHub("kafka:9092", 5, consumer_factory=FakeConsumer)
    partition = TopicPartition(topics.SEGMENTS_MEMBERSHIP, 0)
    burst = [
        Record(
            n,
            events_pb2.SegmentMembershipChanged(
                event_id=f"e{n}",
                customer_id=f"c{n}",
                segment_id="s1",
                change=events_pb2.MEMBERSHIP_CHANGE_ENTERED,
            ).SerializeToString(),
        )
        for n in range(50)
    ]
    async with hub.watch(Watch.SEGMENT, "s1") as subscriber:

        async def take_each() -> list[CustomerChange | MembershipChange | PassChange]:
            # Awaits the queue directly, as a subscription's task does.
            return [await subscriber.next() for _ in range(50)]

        reader = asyncio.create_task(take_each())
        await hub.start()
        try:
            FakeConsumer.made[0].batches.append({partition: burst})
            got = await asyncio.wait_for(reader, 10)
        finally:
            await hub.stop()
    assert [e.event_id for e in got] == [f"e{n}" for n in range(50)]
    assert not subscriber.dropped


async def test_a_subscriber_needing_turns_per_event_keeps_up_and_a_stalled_one_drops() -> None:
    # On a loaded machine a client that keeps up may need several turns of the loop per
    # event (encode, send, drain); one turn per record let its queue grow until a burst
    # dropped it (seen in an end-to-end run). A subscriber that takes nothing still drops.
    FakeConsumer.made.clear()
    hub = LiveHub("kafka:9092", 10, consumer_factory=FakeConsumer)
    partition = TopicPartition(topics.SEGMENTS_MEMBERSHIP, 0)
    size = 200
    burst = [
        Record(
            n,
            events_pb2.SegmentMembershipChanged(
                event_id=f"e{n}",
                customer_id=f"c{n}",
                segment_id="s1",
                change=events_pb2.MEMBERSHIP_CHANGE_ENTERED,
            ).SerializeToString(),
        )
        for n in range(size)
    ]
    async with hub.watch(Watch.SEGMENT, "s1") as busy, hub.watch(Watch.SEGMENT, "s1") as stalled:

        async def take_slowly() -> list[str]:
            got = []
            for _ in range(size):
                got.append((await busy.next()).event_id)
                for _ in range(4):
                    await asyncio.sleep(0)
            return got

        reader = asyncio.create_task(take_slowly())
        await hub.start()
        try:
            FakeConsumer.made[0].batches.append({partition: burst})
            got = await asyncio.wait_for(reader, 30)
        finally:
            await hub.stop()
        assert got == [f"e{n}" for n in range(size)]
        assert not busy.dropped
        assert stalled.dropped
        with pytest.raises(FellBehind):
            await stalled.next()
