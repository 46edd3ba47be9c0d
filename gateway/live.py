"""The live hub of one gateway process: what GraphQL subscriptions watch, read from Kafka.

Each replica runs ONE consumer with no consumer group: it is assigned every partition of the
three live topics and starts at their latest offsets, so every replica sees every change
(a shared group would split the partitions and a replica would miss its subscribers'
events). Nothing is committed; a restarted replica starts again at the latest offsets.

Decoded events fan out in memory to the subscribers watching their key (a customer, a
segment, a customer's passes). Each subscriber has a bounded queue: one that is full when
the next event arrives fell behind and is dropped at once (its queue is emptied and its
subscription ends with :class:`FellBehind`), so a slow client never holds memory nor slows
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from google.protobuf.message import DecodeError
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.kafka import KafkaConsumer, Partition, Record

log = logging.getLogger(__name__)

LIVE_SUBSCRIBERS = Gauge(
    "lodestar_gateway_live_subscribers", "Subscriptions watching the live hub", ["watch"]
)
LIVE_DELIVERED = MetricCounter(
    "lodestar_gateway_live_events_total",
    "Live events handed to subscribers, and subscribers dropped for falling behind",
    ["watch", "outcome"],
)

LIVE_TOPICS: Final = (topics.PROFILE_CHANGED, topics.SEGMENTS_MEMBERSHIP, topics.WALLET_PASS_EVENTS)
# Records read per poll, and the wait for more when there are none.
_MAX_RECORDS = 500
_POLL_MS = 500
# A subscriber over half full that took nothing in this long is not waited for.
_STALLED_S = 0.005
# After a failed poll (broker away), wait this long before the next.
_RETRY_S = 1.0


class Watch(StrEnum):
    """What a subscriber watches; with an id, its key in the hub."""

    CUSTOMER = "customer"
    SEGMENT = "segment"
    PASSES = "passes"


@dataclass(frozen=True)
class CustomerChange:
    """A customer's profile changed: which paths, and when."""

    event_id: str
    customer_id: str
    changed_fields: tuple[str, ...]
    at: datetime | None


@dataclass(frozen=True)
class MembershipChange:
    """A customer entered or exited a segment."""

    event_id: str
    segment_id: str
    customer_id: str
    entered: bool
    at: datetime | None


@dataclass(frozen=True)
class PassChange:
    """One of a customer's passes was installed, pushed or removed."""

    event_id: str
    customer_id: str
    serial_number: str
    platform: str
    kind: str
    at: datetime | None


LiveEvent = CustomerChange | MembershipChange | PassChange
Key = tuple[Watch, str]

_PASS_KINDS = {
    events_pb2.PASS_EVENT_KIND_INSTALLED: "INSTALLED",
    events_pb2.PASS_EVENT_KIND_PUSHED: "PUSHED",
    events_pb2.PASS_EVENT_KIND_REMOVED: "REMOVED",
}
_MEMBERSHIP = {
    events_pb2.MEMBERSHIP_CHANGE_ENTERED: True,
    events_pb2.MEMBERSHIP_CHANGE_EXITED: False,
}


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    at: datetime = getattr(message, name).ToDatetime(UTC)
    return at


def _customer_change(value: bytes) -> tuple[Key, LiveEvent] | None:
    changed = events_pb2.ProfileChanged.FromString(value)
    if not changed.customer_id:
        return None
    return (Watch.CUSTOMER, changed.customer_id), CustomerChange(
        event_id=changed.event_id,
        customer_id=changed.customer_id,
        changed_fields=tuple(sorted(set(changed.changed_paths))),
        at=_time(changed, "changed_at"),
    )


def _membership_change(value: bytes) -> tuple[Key, LiveEvent] | None:
    membership = events_pb2.SegmentMembershipChanged.FromString(value)
    entered = _MEMBERSHIP.get(membership.change)
    if entered is None or not membership.segment_id:
        return None
    return (Watch.SEGMENT, membership.segment_id), MembershipChange(
        event_id=membership.event_id,
        segment_id=membership.segment_id,
        customer_id=membership.customer_id,
        entered=entered,
        at=_time(membership, "at"),
    )


def _pass_change(value: bytes) -> tuple[Key, LiveEvent] | None:
    event = events_pb2.PassEvent.FromString(value)
    kind = _PASS_KINDS.get(event.kind)
    if kind is None or not event.customer_id:
        return None
    return (Watch.PASSES, event.customer_id), PassChange(
        event_id=event.event_id,
        customer_id=event.customer_id,
        serial_number=event.serial_number,
        platform=event.platform,
        kind=kind,
        at=_time(event, "at"),
    )


# What each topic's records are watched by, and whether its record key is the watched id
# (both are keyed by customer), so records nobody watches are skipped undecoded.
_WATCHED_BY: Final = {
    topics.PROFILE_CHANGED: (Watch.CUSTOMER, True),
    topics.SEGMENTS_MEMBERSHIP: (Watch.SEGMENT, False),
    topics.WALLET_PASS_EVENTS: (Watch.PASSES, True),
}

_DECODERS: Final[dict[str, Callable[[bytes], tuple[Key, LiveEvent] | None]]] = {
    topics.PROFILE_CHANGED: _customer_change,
    topics.SEGMENTS_MEMBERSHIP: _membership_change,
    topics.WALLET_PASS_EVENTS: _pass_change,
}


def decode(topic: str, value: bytes) -> tuple[Key, LiveEvent] | None:
    """The key and event a record of a live topic carries; None for one that says nothing a
    subscriber can watch (an unknown kind, no id). Raises DecodeError on undecodable bytes."""
    decoder = _DECODERS.get(topic)
    return None if decoder is None else decoder(value)


class FellBehind(Exception):
    """The subscriber's queue was full when an event arrived: it was dropped."""

    def __init__(self, queue_size: int) -> None:
        super().__init__(
            f"this subscription fell behind (more than {queue_size} events waiting) and was "
            "ended; subscribe again"
        )
        self.queue_size = queue_size


_DROPPED: Final = object()


class Subscriber:
    """One subscription's view of the hub: a bounded queue of the events of its key."""

    def __init__(self, key: Key, queue_size: int) -> None:
        self.key = key
        self.queue_size = queue_size
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self.dropped = False
        # Events taken so far: whether a subscriber is still taking, when the hub paces.
        self.taken = 0

    def offer(self, event: LiveEvent) -> bool:
        """Queue ``event``; False when the queue is full (the subscriber fell behind)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def drop(self) -> None:
        """Forget what is queued and leave only the news that it fell behind."""
        self.dropped = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_DROPPED)

    async def next(self) -> LiveEvent:
        """The next event; raises FellBehind once the subscriber was dropped."""
        item = await self._queue.get()
        if item is _DROPPED:
            self._queue.put_nowait(_DROPPED)
            raise FellBehind(self.queue_size)
        self.taken += 1
        assert isinstance(item, CustomerChange | MembershipChange | PassChange)
        return item

    def pending(self) -> int:
        """Events queued and not yet taken."""
        return self._queue.qsize()


class LiveConsumer(Protocol):
    """What the hub asks of its consumer (:class:`KafkaConsumer` in production)."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Disconnect."""

    async def topics(self) -> set[str]:
        """Every topic (refreshes the metadata)."""

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The partition numbers of ``topic``."""

    def assign(self, partitions: list[Partition]) -> None:
        """Read exactly ``partitions``."""

    async def seek_to_end(self, *partitions: Partition) -> None:
        """Start ``partitions`` at their latest offsets."""

    async def position(self, partition: Partition) -> int:
        """The offset of the next record to fetch."""

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> Mapping[Partition, Sequence[Record]]:
        """The records fetched, by partition."""


ConsumerFactory = Callable[..., LiveConsumer]


class LiveHub:
    """Reads the live topics with one group-less consumer and fans out to subscribers."""

    def __init__(
        self,
        bootstrap_servers: str,
        queue_size: int,
        *,
        client_id: str = "gateway-live",
        fetch_max_wait_ms: int = 50,
        consumer_factory: ConsumerFactory = KafkaConsumer,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.queue_size = queue_size
        self.client_id = client_id
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.consumer_factory = consumer_factory
        self._subscribers: dict[Key, set[Subscriber]] = {}
        # Subscribers per kind of watch: records of a kind nobody watches are not decoded.
        self._watching: Counter[Watch] = Counter()
        self._consumer: LiveConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.assigned: tuple[Partition, ...] = ()

    # --- subscribers ---

    @contextlib.asynccontextmanager
    async def watch(self, what: Watch, id_: str) -> AsyncIterator[Subscriber]:
        """A subscriber of ``(what, id_)`` for the duration of the block."""
        subscriber = Subscriber((what, id_), self.queue_size)
        self._subscribers.setdefault(subscriber.key, set()).add(subscriber)
        self._watching[what] += 1
        LIVE_SUBSCRIBERS.labels(what.value).inc()
        try:
            yield subscriber
        finally:
            self._forget(subscriber)

    def _forget(self, subscriber: Subscriber) -> None:
        watching = self._subscribers.get(subscriber.key)
        if watching is not None and subscriber in watching:
            self._watching[subscriber.key[0]] -= 1
            LIVE_SUBSCRIBERS.labels(subscriber.key[0].value).dec()
            watching.discard(subscriber)
            if not watching:
                del self._subscribers[subscriber.key]

    def subscriber_count(self) -> int:
        """Subscribers registered now (dropped ones are no longer counted)."""
        return sum(len(s) for s in self._subscribers.values())

    def dispatch(self, key: Key, event: LiveEvent) -> None:
        """Hand ``event`` to every subscriber of ``key``; one whose queue is full is dropped
        and the others still receive it."""
        for subscriber in list(self._subscribers.get(key, ())):
            if subscriber.offer(event):
                LIVE_DELIVERED.labels(key[0].value, "delivered").inc()
            else:
                LIVE_DELIVERED.labels(key[0].value, "dropped").inc()
                self._forget(subscriber)
                subscriber.drop()
                log.info(
                    "live subscriber fell behind and was dropped",
                    extra={"fields": {"watch": key[0].value, "queue": self.queue_size}},
                )

    def receive(
        self, topic: str, partition: int, offset: int, value: bytes | None, key: bytes | None = None
    ) -> Key | None:
        """Decode one record and dispatch it; one nobody watches is skipped undecoded (by
        its topic, or by its key where the key is the watched id), an undecodable one is
        skipped and logged by its position, never its content. Returns the key dispatched."""
        if value is None or not self._wanted(topic, key):
            return None
        try:
            decoded = decode(topic, value)
        except DecodeError:
            log.warning(
                "skipped an undecodable live record",
                extra={"fields": {"topic": topic, "partition": partition, "offset": offset}},
            )
            return None
        if decoded is None:
            return None
        self.dispatch(*decoded)
        return decoded[0]

    async def pace(self, key: Key) -> None:
        """Let the subscribers of ``key`` that are taking events work their queues down to
        half before the next event: a burst must not drop a client that keeps up but needs
        several turns of the loop per event (a loaded machine). A subscriber that took
        nothing for ``_STALLED_S`` is not waited for: its queue fills and it is dropped."""
        for subscriber in list(self._subscribers.get(key, ())):
            while not subscriber.dropped and subscriber.pending() > self.queue_size // 2:
                taken = subscriber.taken
                await asyncio.sleep(_STALLED_S)
                if subscriber.taken == taken:
                    break

    def _wanted(self, topic: str, key: bytes | None) -> bool:
        watched = _WATCHED_BY.get(topic)
        if watched is None:
            return False
        what, keyed_by_id = watched
        if not self._watching[what]:
            return False
        if not keyed_by_id or key is None:
            return True
        try:
            return (what, key.decode()) in self._subscribers
        except UnicodeDecodeError:
            return True

    # --- the consumer ---

    async def start(self) -> None:
        """Connect, assign every partition of the live topics and seek to their ends."""
        consumer = self.consumer_factory(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            # No group: this replica reads every partition itself and commits nothing.
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            # A metadata refresh: the partitions of every topic become known.
            await consumer.topics()
            partitions: list[Partition] = []
            for topic in LIVE_TOPICS:
                numbers = consumer.partitions_for_topic(topic)
                if not numbers:
                    log.warning(
                        "live topic missing; nothing of it is seen",
                        extra={"fields": {"topic": topic}},
                    )
                    continue
                partitions += [Partition(topic, n) for n in sorted(numbers)]
            consumer.assign(partitions)
            if partitions:
                await consumer.seek_to_end(*partitions)
                # Resolve the end offsets now, so an event produced from here on is seen.
                for partition in partitions:
                    await consumer.position(partition)
        except BaseException:
            await self.stop()
            raise
        self.assigned = tuple(partitions)
        self._task = asyncio.create_task(self._run(consumer), name="live-hub")

    async def _run(self, consumer: LiveConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the live topics failed; retrying")
                await asyncio.sleep(_RETRY_S)
                continue
            for partition, records in batches.items():
                topic, number = partition.topic, partition.partition
                for record in records:
                    key = self.receive(topic, number, record.offset, record.value, record.key)
                    # Let subscribers take each event before the next: a burst on one key
                    # (a segment recomputed) must not overflow subscribers that keep up.
                    await asyncio.sleep(0)
                    if key is not None:
                        await self.pace(key)

    async def stop(self) -> None:
        """Stop reading and disconnect; subscribers keep their queues until they end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
