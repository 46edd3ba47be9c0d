"""The Kafka bus against a real Kafka-wire broker (Tansu)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import pytest

from infra.local.servers import KafkaWireServer
from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, Subscription, ensure_topics
from tests.support.kafka import eventually, group_lag, read_all, unique

Batch = Sequence[Delivery[events_pb2.Event]]


def config(kafka: KafkaWireServer, **overrides: int) -> BusConfig:
    values = {"session_timeout_ms": 2000, "handler_retries": 2, "retry_backoff_ms": 10}
    values.update(overrides)
    return BusConfig(bootstrap_servers=kafka.bootstrap_servers, client_id="test", **values)  # type: ignore[arg-type]


@pytest.fixture
async def bus(kafka_server: KafkaWireServer) -> AsyncIterator[Bus]:
    bus = Bus(config(kafka_server))
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def topic(kafka_server: KafkaWireServer) -> str:
    name = unique("test.bus")
    await ensure_topics(kafka_server.bootstrap_servers, {name: 3, topics.DEADLETTER: 3})
    return name


def event(event_id: str) -> events_pb2.Event:
    return events_pb2.Event(event_id=event_id, type=events_pb2.EVENT_TYPE_TRACK, name="Tested")


class Collector:
    """A handler that records what it stored; optionally fails on chosen event ids."""

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.seen: list[str] = []
        self.calls = 0
        self.fail_on = fail_on or set()

    async def __call__(self, batch: Batch) -> None:
        self.calls += 1
        bad = [d.message.event_id for d in batch if d.message.event_id in self.fail_on]
        if bad:
            raise ValueError(f"cannot handle {bad[0]}")
        self.seen.extend(d.message.event_id for d in batch)


async def run_until(sub: Subscription[events_pb2.Event], done: Collector, count: int) -> None:
    task = asyncio.create_task(sub.run())
    try:
        await eventually(lambda: _ready(done, count, task), 30, f"{count} messages handled")
    finally:
        await sub.stop()
        await asyncio.wait_for(task, 15)


async def _ready(done: Collector, count: int, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
    return len(set(done.seen)) >= count


async def test_publish_consume_commit(bus: Bus, topic: str, kafka_server: KafkaWireServer) -> None:
    ids = [f"e{i}" for i in range(50)]
    await bus.publish_many([(topic, f"c{i % 7}", event(e)) for i, e in enumerate(ids)])
    group = unique("g")
    done = Collector()
    await run_until(bus.subscribe([topic], group, events_pb2.Event, done), done, len(ids))
    assert sorted(done.seen) == sorted(ids)
    assert await group_lag(kafka_server.bootstrap_servers, group, topic) == 0


async def test_same_key_keeps_order(bus: Bus, topic: str) -> None:
    ids = [f"ordered-{i:03d}" for i in range(40)]
    for e in ids:
        await bus.publish(topic, "one-customer", event(e))
    done = Collector()
    await run_until(bus.subscribe([topic], unique("g"), events_pb2.Event, done), done, len(ids))
    assert done.seen == ids


async def test_resumes_from_commit_after_restart(
    bus: Bus, topic: str, kafka_server: KafkaWireServer
) -> None:
    group = unique("g")
    first = [f"first-{i}" for i in range(20)]
    await bus.publish_many([(topic, e, event(e)) for e in first])
    done = Collector()
    await run_until(bus.subscribe([topic], group, events_pb2.Event, done), done, len(first))

    second = [f"second-{i}" for i in range(15)]
    await bus.publish_many([(topic, e, event(e)) for e in second])
    again = Collector()
    await run_until(bus.subscribe([topic], group, events_pb2.Event, again), again, len(second))
    assert sorted(again.seen) == sorted(second), "committed messages were delivered again"
    assert await group_lag(kafka_server.bootstrap_servers, group, topic) == 0


async def test_uncommitted_batch_is_redelivered(bus: Bus, topic: str) -> None:
    """A consumer that dies while handling loses nothing: the next one gets the batch again."""
    group = unique("g")
    ids = [f"crash-{i}" for i in range(10)]
    await bus.publish_many([(topic, "k", event(e)) for e in ids])
    entered = asyncio.Event()

    async def hangs(batch: Batch) -> None:
        entered.set()
        await asyncio.Event().wait()

    dying = bus.subscribe([topic], group, events_pb2.Event, hangs)
    task = asyncio.create_task(dying.run())
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()  # the process "dies" mid-batch: no commit happens
    with pytest.raises(asyncio.CancelledError):
        await task

    done = Collector()
    await run_until(bus.subscribe([topic], group, events_pb2.Event, done), done, len(ids))
    assert sorted(done.seen) == sorted(ids)


async def test_poison_bytes_go_to_dead_letter_and_consumer_goes_on(
    bus: Bus, topic: str, kafka_server: KafkaWireServer
) -> None:
    group = unique("g")
    poison = b"\xff\xfe this is not an Event"
    await bus.publish_raw(topic, b"k", poison)
    await bus.publish(topic, "k", event("after-poison"))
    done = Collector()
    await run_until(bus.subscribe([topic], group, events_pb2.Event, done), done, 1)
    assert done.seen == ["after-poison"]

    letters = await _dead_letters(kafka_server, topic)
    assert len(letters) == 1
    assert letters[0].value == poison
    assert "could not decode lodestar.v1.Event" in letters[0].reason
    assert letters[0].consumer_group == group
    assert await group_lag(kafka_server.bootstrap_servers, group, topic) == 0


async def test_failing_message_is_retried_then_dead_lettered_alone(
    bus: Bus, topic: str, kafka_server: KafkaWireServer
) -> None:
    group = unique("g")
    ids = [f"m{i}" for i in range(6)]
    await bus.publish_many([(topic, "same-key", event(e)) for e in ids])
    done = Collector(fail_on={"m3"})
    await run_until(bus.subscribe([topic], group, events_pb2.Event, done), done, len(ids) - 1)
    assert sorted(done.seen) == sorted(set(ids) - {"m3"})

    async def lettered() -> bool:
        return len(await _dead_letters(kafka_server, topic)) == 1

    await eventually(lettered, 10, "dead letter written")
    letter = (await _dead_letters(kafka_server, topic))[0]
    assert letter.reason == "ValueError: cannot handle m3"
    assert events_pb2.Event.FromString(letter.value).event_id == "m3"
    assert letter.attempts == 3  # one try and two retries
    await eventually(
        lambda: _lag_is_zero(kafka_server, group, topic), 10, "offsets committed past the poison"
    )


async def test_stop_drains_the_batch_in_hand(
    bus: Bus, topic: str, kafka_server: KafkaWireServer
) -> None:
    group = unique("g")
    ids = [f"drain-{i}" for i in range(8)]
    await bus.publish_many([(topic, "k", event(e)) for e in ids])
    entered = asyncio.Event()
    release = asyncio.Event()
    stored: list[str] = []

    async def slow(batch: Batch) -> None:
        entered.set()
        await release.wait()
        stored.extend(d.message.event_id for d in batch)

    sub = bus.subscribe([topic], group, events_pb2.Event, slow)
    task = asyncio.create_task(sub.run())
    await asyncio.wait_for(entered.wait(), 30)
    await sub.stop()  # SIGTERM arrives mid-batch
    release.set()
    await asyncio.wait_for(task, 15)
    assert stored, "the batch in hand was dropped"
    lag = await group_lag(kafka_server.bootstrap_servers, group, topic)
    assert lag == len(ids) - len(stored), "the drained batch was not committed"


async def _lag_is_zero(kafka: KafkaWireServer, group: str, topic: str) -> bool:
    return await group_lag(kafka.bootstrap_servers, group, topic) == 0


async def _dead_letters(kafka: KafkaWireServer, topic: str) -> list[events_pb2.DeadLetter]:
    records = await read_all(kafka.bootstrap_servers, topics.DEADLETTER)
    letters = [events_pb2.DeadLetter.FromString(r.value) for r in records]
    return [letter for letter in letters if letter.topic == topic]


async def test_next_batch_is_handled_while_pending_effects_complete(
    kafka_server: KafkaWireServer, topic: str
) -> None:
    bus = Bus(config(kafka_server, max_batch=1))
    await bus.start()
    try:
        await bus.publish_many([(topic, "k", event("first")), (topic, "k", event("second"))])
        release = asyncio.Event()
        order: list[str] = []

        async def pipelined(batch: Batch) -> Awaitable[object] | None:
            event_id = batch[0].message.event_id
            order.append(f"handled {event_id}")
            if event_id == "first":

                async def acknowledged() -> None:
                    await release.wait()
                    order.append("first acknowledged")

                return asyncio.ensure_future(acknowledged())
            release.set()
            return None

        group = unique("g")
        sub = bus.subscribe([topic], group, events_pb2.Event, pipelined)
        task = asyncio.create_task(sub.run())
        await eventually(
            lambda: _lag_is_zero(kafka_server, group, topic), 30, "both batches committed"
        )
        await sub.stop()
        await asyncio.wait_for(task, 15)
        assert order == ["handled first", "handled second", "first acknowledged"]
    finally:
        await bus.stop()


async def test_failed_pending_effects_handle_the_batch_again(
    bus: Bus, topic: str, kafka_server: KafkaWireServer
) -> None:
    await bus.publish(topic, "k", event("flaky-ack"))
    calls = 0

    async def flaky(batch: Batch) -> Awaitable[object]:
        nonlocal calls
        calls += 1

        async def ack() -> None:
            if calls == 1:
                raise ConnectionError("broker went away before acknowledging")

        return asyncio.ensure_future(ack())

    group = unique("g")
    sub = bus.subscribe([topic], group, events_pb2.Event, flaky)
    task = asyncio.create_task(sub.run())
    await eventually(lambda: _lag_is_zero(kafka_server, group, topic), 30, "committed")
    await sub.stop()
    await asyncio.wait_for(task, 15)
    assert calls == 2


async def test_topics_are_created_with_their_retention(kafka_server: KafkaWireServer) -> None:
    """The broker accepts the retention config (Apache Kafka applies it; the local broker
    keeps everything in memory and cannot describe configs, so only acceptance is checked)."""
    name = unique("test.retention")
    await ensure_topics(kafka_server.bootstrap_servers, {name: 2}, retention_ms={name: 3_600_000})
    await ensure_topics(kafka_server.bootstrap_servers, {name: 2})  # again: left as it is
    from tests.support.kafka import partitions_of

    assert len(await partitions_of(kafka_server.bootstrap_servers, name)) == 2


async def test_failed_effects_are_redone_before_the_next_batch_goes_out(
    kafka_server: KafkaWireServer, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One customer's events keep their input order on the output topic when a batch's
    publish fails after its handler returned while the next batch is already handled: the
    failed batch is handled again before the next batch's messages go out."""
    out = unique("test.bus.out")
    await ensure_topics(kafka_server.bootstrap_servers, {out: 3})
    bus = Bus(config(kafka_server, max_batch=1))  # one event per batch: N, then N+1
    await bus.start()
    try:
        ids = [f"ordered-{i:02d}" for i in range(10)]
        await bus.publish_many([(topic, "one-customer", event(e)) for e in ids])
        lost = _LoseFirstSend(bus, out, "ordered-03")
        monkeypatch.setattr(bus.producer, "send", lost.send)

        async def forward(batch: Batch) -> Awaitable[object]:
            return await bus.publish_many_later([(out, d.key, d.message) for d in batch])

        group = unique("g")
        sub = bus.subscribe([topic], group, events_pb2.Event, forward)
        task = asyncio.create_task(sub.run())
        await eventually(lambda: _lag_is_zero(kafka_server, group, topic), 60, "all committed")
        await sub.stop()
        await asyncio.wait_for(task, 15)
        assert lost.failed, "the publish of ordered-03 was never failed"
    finally:
        await bus.stop()

    everything = await read_all(kafka_server.bootstrap_servers, out)
    mine = [r for r in everything if r.key == b"one-customer"]
    records = sorted(mine, key=lambda r: (r.partition, r.offset))
    published = [events_pb2.Event.FromString(r.value).event_id for r in records]
    first_seen = list(dict.fromkeys(published))
    assert first_seen == ids, f"order on the output topic: {published}"
    repeated = {e for e in published if published.count(e) > 1}
    assert repeated <= {"ordered-03"}, f"only the failed batch may come twice: {published}"


class _LoseFirstSend:
    """Wraps a producer's ``send``: the first send of one event to ``topic`` never reaches
    the broker and its acknowledgement fails, once another message is queued after it (or
    after a while when none is)."""

    def __init__(self, bus: Bus, topic: str, event_id: str) -> None:
        self.real = bus.producer.send
        self.topic = topic
        self.event_id = event_id
        self.failed = False
        self._waiting: asyncio.Future[object] | None = None

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any
    ) -> asyncio.Future[object]:
        self._fail_waiting()
        if (
            not self.failed
            and topic == self.topic
            and events_pb2.Event.FromString(value or b"").event_id == self.event_id
        ):
            self.failed = True
            self._waiting = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(2.0, self._fail_waiting)
            return self._waiting
        result: asyncio.Future[object] = await self.real(topic, value=value, key=key, **kw)
        return result

    def _fail_waiting(self) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_exception(ConnectionError("the broker never acknowledged it"))
