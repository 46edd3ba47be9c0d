"""Reading Kafka state in tests: group offsets (with explicit partitions, as Tansu needs),
end offsets and lag, and everything on a topic."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        found = await consumer._client.fetch_all_metadata()
        return [TopicPartition(topic, p) for p in sorted(found.partitions_for_topic(topic) or [])]
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The next offset of each partition, found by reading the records.

    Tansu answers ListOffsets(latest) with the last record *batch*'s base offset + 1, which is
    short when producers batch; so lag is computed from what is really on the topic.
    """
    ends = dict.fromkeys(await partitions_of(bootstrap, topic), 0)
    for record in await read_all(bootstrap, topic):
        tp = TopicPartition(record.topic, record.partition)
        ends[tp] = max(ends[tp], record.offset + 1)
    return ends


async def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Messages on ``topic`` that ``group`` has not committed yet."""
    return await committed_lag(bootstrap, group, await end_offsets(bootstrap, topic))


async def committed_lag(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> int:
    """Records before ``ends`` (per partition) that ``group`` has not committed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        lag = 0
        for tp, end in ends.items():
            # Tansu needs the partition named explicitly to return a group's offset.
            committed: int | None = await consumer.committed(tp)
            lag += end - (committed or 0)
        return lag
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, idle_s: float = 0.5) -> list[ConsumerRecord]:
    """Everything on ``topic``: reads from the start until a fetch comes back empty."""
    tps = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        started = time.monotonic()
        while time.monotonic() < started + 60:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                # Done once every partition has answered a fetch and nothing more arrives.
                # (Tansu's high watermark can be short, so it is a floor, not the end.)
                marks = [consumer.highwater(tp) for tp in tps]
                positions = [await consumer.position(tp) for tp in tps]
                caught_up = all(
                    m is not None and p >= m for m, p in zip(marks, positions, strict=True)
                )
                if caught_up or time.monotonic() > started + 10:
                    break
                continue
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    """Poll an async ``check`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


def unique(prefix: str) -> str:
    """A name no other test uses (topics, groups, databases live for the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
