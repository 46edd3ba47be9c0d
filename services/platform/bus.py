"""The Kafka bus every service publishes and consumes through (aiokafka + protobuf).

Delivery is at-least-once: a subscription commits a batch's offsets only after its handler
returned, i.e. after the effect is stored. Handlers must therefore be idempotent. A message that
cannot be decoded, or that still fails after the bounded retries, goes to the dead-letter topic
with the reason and its original bytes, and the subscription moves on.

A handler may hand back its publishes still in flight; the next batch is handled meanwhile,
but its messages reach the producer only once the batch before is finished (acknowledged, or
handled again after its publishes failed), so one key's messages keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import events_pb2
from services.platform import metrics, topics, tracing
from services.platform.errors import PoisonMessage, is_infrastructure_failure
from services.platform.kafka import (
    CommitFailed,
    KafkaConsumer,
    KafkaProducer,
    Partition,
    Record,
    TopicSpec,
    create_topics,
)
from services.platform.settings import CommonSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

TOPIC_ALREADY_EXISTS = 36
# How often a subscription updates its lag gauges, at most (not per message: cheap).
LAG_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Delivery(Generic[M]):
    """One consumed record and its decoded message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    message: M
    # When the record was produced (the broker's or producer's timestamp), in ms.
    timestamp_ms: int = 0
    # The record's headers (the producer's trace context travels in ``traceparent``).
    headers: Sequence[tuple[str, bytes]] = ()


# What a handler may hand back: effects still in flight (e.g. produced messages waiting for
# the broker's acknowledgement). The bus goes on with the next batch meanwhile and commits
# this one only once they completed.
Pending = Awaitable[object]
Handler = Callable[[Sequence[Delivery[M]]], Awaitable[Pending | None]]


class _Chain:
    """Holds a batch's publishes back until the batch before it is finished (its effects
    acknowledged, or it was handled again), and each behind the one queued before it."""

    def __init__(self, previous: asyncio.Future[None]) -> None:
        self.tail: asyncio.Future[object] | asyncio.Future[None] = previous

    def clear(self) -> bool:
        """Whether everything before succeeded, so records may go to the producer at once."""
        tail = self.tail
        return tail.done() and not tail.cancelled() and tail.exception() is None


# Set by a subscription while its handler runs (see Subscription.run): a batch's messages
# never reach the broker before those of the batch before it, even when those failed.
_CHAIN: ContextVar[_Chain | None] = ContextVar("lodestar_bus_chain", default=None)


@dataclass
class _InFlight(Generic[M]):
    offsets: dict[Partition, int]
    deliveries: list[Delivery[M]]
    pending: Pending | None
    started: float


@dataclass(frozen=True)
class BusConfig:
    """Connection and delivery settings, taken from :class:`CommonSettings`."""

    bootstrap_servers: str
    client_id: str
    idempotent_producer: bool = False
    session_timeout_ms: int = 10_000
    max_batch: int = 500
    fetch_max_wait_ms: int = 50
    handler_retries: int = 3
    retry_backoff_ms: int = 200
    partitions: int = 6
    replication_factor: int = 1

    @classmethod
    def from_settings(cls, settings: CommonSettings, client_id: str) -> BusConfig:
        """Build from the typed settings of the running process."""
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=client_id,
            idempotent_producer=settings.kafka_idempotent_producer,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            max_batch=settings.kafka_max_batch,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            handler_retries=settings.kafka_handler_retries,
            retry_backoff_ms=settings.kafka_retry_backoff_ms,
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
        )


async def ensure_topics(
    bootstrap_servers: str,
    partitions: Mapping[str, int],
    replication_factor: int = 1,
    retention_ms: Mapping[str, int] | None = None,
) -> None:
    """Create the topics that do not exist yet (with ``retention.ms`` where given); existing
    ones are left as they are."""
    retention = retention_ms or {}
    specs = [
        TopicSpec(
            name,
            count,
            replication_factor,
            {"retention.ms": str(retention[name])} if name in retention else {},
        )
        for name, count in partitions.items()
    ]
    for name, code, message in await create_topics(bootstrap_servers, specs):
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise RuntimeError(f"creating topic {name} failed: {code} {message}")


def _key_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class Bus:
    """Produces protobuf messages keyed by customer and creates subscriptions."""

    def __init__(self, config: BusConfig) -> None:
        self.config = config
        self._producer: KafkaProducer | None = None

    async def start(self) -> None:
        """Connect the producer (acks=all; idempotence only when configured)."""
        self._producer = KafkaProducer(
            bootstrap_servers=self.config.bootstrap_servers,
            client_id=self.config.client_id,
            acks="all",
            enable_idempotence=self.config.idempotent_producer,
            linger_ms=2,
            request_timeout_ms=15_000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        """Flush what is in flight and disconnect."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def producer(self) -> KafkaProducer:
        """The connected producer."""
        if self._producer is None:
            raise RuntimeError("Bus.start() was not awaited")
        return self._producer

    async def publish(self, topic: str, key: str | bytes | None, message: Message) -> None:
        """Send one message and return once the broker acknowledged it."""
        await self.publish_many([(topic, key, message)])

    async def publish_many(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> None:
        """Send many messages pipelined; return when every one is acknowledged."""
        await (await self.publish_many_later(records))

    async def publish_many_later(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> Pending:
        """Queue messages in order and return at once; the returned awaitable completes
        when the broker acknowledged every one (hand it back to the bus as a handler's
        pending effects).

        Inside a subscription's handler, while the batch before is not finished, the
        messages are held and go to the producer only once it is (see :class:`_Chain`).
        """
        chain = _CHAIN.get()
        if chain is None or chain.clear():
            return await self._send_many(records)
        held = asyncio.ensure_future(self._send_after(chain.tail, records))
        chain.tail = held
        return held

    async def _send_after(
        self,
        before: asyncio.Future[object] | asyncio.Future[None],
        records: Sequence[tuple[str, str | bytes | None, Message]],
    ) -> object:
        # Shielded: a cancelled batch must not cancel the completion of the one before.
        await asyncio.shield(before)
        return await (await self._send_many(records))

    async def _send_many(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> asyncio.Future[object]:
        pending = [await self._send_one(topic, key, msg) for topic, key, msg in records]
        for topic, _, _ in records:
            metrics.BUS_PRODUCED.labels(topic).inc()
        return self.producer.acknowledged(pending)

    async def _send_one(
        self, topic: str, key: str | bytes | None, message: Message
    ) -> asyncio.Future[object]:
        """Queue one record; with tracing on it carries its producer span in its headers."""
        headers, span = tracing.start_produce(topic, message)
        acknowledged = await self.producer.send(
            topic, key=_key_bytes(key), value=message.SerializeToString(), headers=headers
        )
        if span is not None:
            tracing.end_produce(span, acknowledged)
        return acknowledged

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are (the dead-letter path keeps the original payload)."""
        await self.producer.send_and_wait(topic, key=key, value=value)
        metrics.BUS_PRODUCED.labels(topic).inc()

    async def check(self) -> None:
        """Ask a broker for the cluster's metadata: fails (:class:`BusUnavailable`) when
        none answers."""
        await self.producer.fetch_metadata()

    def subscribe(
        self,
        topics_: Sequence[str],
        group: str,
        message_type: type[M],
        handler: Handler[M],
    ) -> Subscription[M]:
        """A consumer-group subscription that feeds decoded batches to ``handler``."""
        return Subscription(self, list(topics_), group, message_type, handler)


class Subscription(Generic[M]):
    """The consume loop: decode, handle with retries, dead-letter, then commit."""

    def __init__(
        self,
        bus: Bus,
        topics_: list[str],
        group: str,
        message_type: type[M],
        handler: Handler[M],
    ) -> None:
        self.bus = bus
        self.topics = topics_
        self.group = group
        self.message_type = message_type
        self.handler = handler
        self._stopping = asyncio.Event()
        self._consumer: KafkaConsumer | None = None
        # The offsets this subscription committed last, the partitions it reports a lag
        # for, and when it last measured.
        self._committed: dict[Partition, int] = {}
        self._lag_reported: set[Partition] = set()
        self._lag_measured = 0.0

    async def start(self) -> None:
        """Join the consumer group; messages are read from the earliest uncommitted offset."""
        cfg = self.bus.config
        self._consumer = KafkaConsumer(
            *self.topics,
            bootstrap_servers=cfg.bootstrap_servers,
            client_id=cfg.client_id,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=max(100, cfg.session_timeout_ms // 3),
            max_poll_records=cfg.max_batch,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        )
        await self._consumer.start()

    async def run(self) -> None:
        """Consume until :meth:`stop`; the batch in hand is finished and committed first.

        A batch's completion (its pending effects, then its commit) runs while the next batch
        is fetched and handled, so neither a broker round trip for the commit nor the wait
        for acknowledgements sits between two batches; completions stay in order, each
        batch's commit after its own effects. The next batch's messages are held until the
        batch before is finished: when its effects failed it is handled again first, so
        per-key order on the output topics holds across such a failure.
        """
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        completing: asyncio.Task[None] | None = None
        # Done when the previous batch's effects are (acknowledged, or the batch handled
        # again after they failed); the next batch's publishes wait for it.
        settled: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=200, max_records=self.bus.config.max_batch
                )
                await self._measure_lag(consumer)
                current = await self._process(batches, settled) if batches else None
                if current is None:
                    continue
                if completing is not None:
                    await completing
                settled = asyncio.create_task(self._settle(current))
                completing = asyncio.create_task(self._complete(consumer, current, settled))
            if completing is not None:
                await completing
                completing = None
        finally:
            if completing is not None and not completing.done():
                completing.cancel()
                await asyncio.gather(completing, return_exceptions=True)
            await consumer.stop()

    async def stop(self) -> None:
        """Ask the loop to drain; :meth:`run` returns after its last commit."""
        self._stopping.set()

    async def _process(
        self,
        batches: Mapping[Partition, Sequence[Record]],
        previous: asyncio.Future[None] | None = None,
    ) -> _InFlight[M]:
        started = time.perf_counter()
        deliveries: list[Delivery[M]] = []
        for records in batches.values():
            for record in records:
                delivery = self._decode(record)
                if delivery is None:
                    await self._dead_letter(
                        record, f"could not decode {self.message_type.DESCRIPTOR.full_name}", 1
                    )
                else:
                    deliveries.append(delivery)
        pending: Pending | None = None
        if deliveries:
            chain = _CHAIN.set(_Chain(previous)) if previous is not None else None
            try:
                with tracing.consuming(self.group, deliveries):
                    pending = await self._handle(deliveries)
            finally:
                if chain is not None:
                    _CHAIN.reset(chain)
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
        return _InFlight(offsets, deliveries, pending, started)

    async def _settle(self, batch: _InFlight[M]) -> None:
        """Wait for the batch's pending effects; when they failed, handle it again."""
        if batch.pending is None:
            return
        try:
            await batch.pending
        except Exception as exc:
            # The effects failed after the handler returned: handle the batch again, this
            # time waiting for them (handlers are idempotent). The next batch's messages
            # are held until this is done.
            log.warning(
                "pending effects failed, handling the batch again",
                extra={"fields": {"group": self.group, "error": repr(exc)}},
            )
            await self._handle(batch.deliveries, wait=True)

    async def _complete(
        self, consumer: KafkaConsumer, batch: _InFlight[M], settled: Awaitable[object]
    ) -> None:
        """Once the batch's effects are settled, commit its offsets."""
        await settled
        try:
            await consumer.commit(batch.offsets)
            self._committed.update(batch.offsets)
        except CommitFailed as exc:
            # A rebalance took the partitions away; the new owner redelivers, handlers dedupe.
            log.warning(
                "commit failed, batch will be redelivered",
                extra={"fields": {"group": self.group, "error": str(exc)}},
            )
        metrics.BUS_BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - batch.started)

    def _decode(self, record: Record) -> Delivery[M] | None:
        value: bytes = record.value or b""
        message = self.message_type()
        try:
            message.ParseFromString(value)
        except DecodeError:
            return None
        return Delivery(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=value,
            message=message,
            timestamp_ms=int(record.timestamp or 0),
            headers=record.headers or (),
        )

    async def _handle(self, deliveries: list[Delivery[M]], wait: bool = False) -> Pending | None:
        """The whole batch at once; if it keeps failing, one by one to isolate the poison.

        Returns the whole batch's pending effects; when isolating (or asked to ``wait``),
        each message's effects are awaited before the next so a failure is pinned on it.
        """
        error, pending = await self._attempt(deliveries, wait)
        if error is None:
            self._count(deliveries, "ok")
            return pending
        if len(deliveries) == 1:
            await self._dead_letter_delivery(deliveries[0], error)
            return None
        for delivery in deliveries:
            single_error, _ = await self._attempt([delivery], wait=True)
            if single_error is None:
                self._count([delivery], "ok")
            else:
                await self._dead_letter_delivery(delivery, single_error)
        return None

    async def _attempt(
        self, deliveries: list[Delivery[M]], wait: bool
    ) -> tuple[BaseException | None, Pending | None]:
        cfg = self.bus.config
        attempt = 0
        while True:
            try:
                pending = await self.handler(deliveries)
                if wait and pending is not None:
                    await pending
                    pending = None
                return None, pending
            except PoisonMessage as exc:
                return exc, None
            except Exception as exc:
                attempt += 1
                infra = is_infrastructure_failure(exc)
                if not infra and attempt > cfg.handler_retries:
                    return exc, None
                delay = min(30.0, cfg.retry_backoff_ms / 1000 * 2 ** min(attempt - 1, 8))
                log.warning(
                    "handler failed, retrying",
                    extra={
                        "fields": {
                            "group": self.group,
                            "attempt": attempt,
                            "infrastructure": infra,
                            "error": f"{type(exc).__name__}: {exc}",
                            "retry_in_s": delay,
                        }
                    },
                )
                await asyncio.sleep(delay)

    def _count(self, deliveries: Sequence[Delivery[M]], outcome: str) -> None:
        for d in deliveries:
            metrics.BUS_CONSUMED.labels(d.topic, self.group, outcome).inc()

    async def _dead_letter_delivery(self, delivery: Delivery[M], error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"
        cause = "poison" if isinstance(error, PoisonMessage) else "handler_failed"
        await self._dead_letter(delivery, reason, self.bus.config.handler_retries + 1, cause)

    async def _dead_letter(
        self,
        record: Record | Delivery[M],
        reason: str,
        attempts: int,
        cause: str = "undecodable",
    ) -> None:
        failed_at = Timestamp()
        failed_at.GetCurrentTime()
        letter = events_pb2.DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key or b"",
            value=record.value or b"",
            reason=reason,
            consumer_group=self.group,
            attempts=attempts,
            failed_at=failed_at,
        )
        await self.bus.publish_raw(
            topics.DEADLETTER,
            record.key,
            letter.SerializeToString(),
        )
        metrics.BUS_CONSUMED.labels(letter.topic, self.group, "dead_lettered").inc()
        metrics.BUS_DEAD_LETTERED.labels(self.group, letter.topic, cause).inc()
        log.error(
            "message dead-lettered",
            extra={
                "fields": {
                    "group": self.group,
                    "topic": letter.topic,
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "reason": reason,
                }
            },
        )

    async def _measure_lag(self, consumer: KafkaConsumer) -> None:
        """Set ``lodestar_consumer_lag`` for every partition this subscription holds (at
        most every :data:`LAG_INTERVAL_S`): the high watermark the last fetch reported
        minus the offset committed here, or the fetch position before any commit. The
        gauges of partitions a rebalance took away are removed (their new owner reports
        them)."""
        now = time.monotonic()
        if now - self._lag_measured < LAG_INTERVAL_S:
            return
        self._lag_measured = now
        held = consumer.assignment()
        for tp in (self._lag_reported | self._committed.keys()) - held:
            self._committed.pop(tp, None)
            self._lag_reported.discard(tp)
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.group, tp.topic, str(tp.partition))
        for tp in held:
            lag = await _lag_of(consumer, tp, self._committed.get(tp))
            if lag is not None:
                metrics.CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)
                self._lag_reported.add(tp)


async def _lag_of(consumer: KafkaConsumer, tp: Partition, committed: int | None) -> int | None:
    """How far ``tp``'s high watermark is ahead of ``committed`` (or the position when this
    consumer committed nothing there yet); None until a fetch reported the watermark."""
    # None when unassigned meanwhile (a rebalance), or no position yet: measured next time.
    highwater = consumer.highwater(tp)
    if highwater is None:
        return None
    # The position is valid once a fetch reported the watermark; bounded so the loop
    # never waits on it.
    done = committed if committed is not None else await consumer.position_within(tp, 0.1)
    if done is None:
        return None
    return max(0, highwater - done)
