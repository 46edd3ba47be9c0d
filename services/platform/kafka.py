"""A typed face over the aiokafka calls the platform makes (aiokafka ships no type hints).

The bus and the gateway's live hub talk to Kafka only through this module, so what they get
back is checked, and Kafka's errors reach them as :class:`BusUnavailable` (``transient`` when
a broker is merely unreachable or slow, which callers retry without end).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
)

from services.platform.errors import BusUnavailable

Headers = Sequence[tuple[str, bytes]]


class Partition(NamedTuple):
    """One partition of a topic (equal to aiokafka's ``TopicPartition`` of the same)."""

    topic: str
    partition: int


class Record(Protocol):
    """One consumed record, as the broker handed it."""

    @property
    def topic(self) -> str:
        """The topic it was read from."""

    @property
    def partition(self) -> int:
        """Its partition."""

    @property
    def offset(self) -> int:
        """Its offset in the partition."""

    @property
    def key(self) -> bytes | None:
        """Its key."""

    @property
    def value(self) -> bytes | None:
        """Its payload."""

    @property
    def timestamp(self) -> int | None:
        """When it was produced, in ms."""

    @property
    def headers(self) -> Headers | None:
        """Its headers."""


class CommitFailed(BusUnavailable):
    """A commit was refused because a rebalance took the partitions away."""


def unavailable(exc: BaseException) -> BaseException:
    """``exc`` as the platform sees it: a Kafka error becomes :class:`BusUnavailable`
    (caused by it), anything else stays as it is."""
    if not isinstance(exc, KafkaError):
        return exc
    transient = isinstance(exc, KafkaConnectionError | KafkaTimeoutError)
    error = BusUnavailable(f"Kafka: {type(exc).__name__}: {exc}", transient=transient)
    error.__cause__ = exc
    return error


def _translated(acknowledged: asyncio.Future[Any]) -> asyncio.Future[object]:
    """A future that completes as ``acknowledged`` does, its Kafka error translated."""
    out: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    def done(future: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if future.cancelled():
            out.cancel()
        elif (error := future.exception()) is not None:
            out.set_exception(unavailable(error))
        else:
            out.set_result(future.result())

    acknowledged.add_done_callback(done)
    return out


def _tp(partition: Partition) -> Any:
    return TopicPartition(partition.topic, partition.partition)


class KafkaProducer:
    """The calls the bus makes on an ``AIOKafkaProducer``."""

    def __init__(self, **config: object) -> None:
        self._producer: Any = AIOKafkaProducer(**config)

    async def start(self) -> None:
        """Connect."""
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise unavailable(exc) from exc

    async def stop(self) -> None:
        """Flush what is in flight and disconnect."""
        await self._producer.stop()

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[object]:
        """Queue one record; the future completes when the broker acknowledged it. Its error
        is Kafka's own: await it through :meth:`acknowledged`, which translates once per
        batch (a translating future per record cost a callback and a loop turn each)."""
        try:
            acknowledged: asyncio.Future[object] = await self._producer.send(
                topic, value=value, key=key, headers=headers
            )
        except KafkaError as exc:
            raise unavailable(exc) from exc
        return acknowledged

    @staticmethod
    def acknowledged(pending: Sequence[asyncio.Future[object]]) -> asyncio.Future[object]:
        """One future for records :meth:`send` queued: done when the broker acknowledged all
        of them, failing with :class:`BusUnavailable` when Kafka refused one."""
        return _translated(asyncio.gather(*pending))

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Send one record and wait for the broker's acknowledgement."""
        try:
            await self._producer.send_and_wait(topic, value=value, key=key)
        except KafkaError as exc:
            raise unavailable(exc) from exc

    async def fetch_metadata(self) -> None:
        """Ask a broker for the cluster's metadata (fails when none answers)."""
        try:
            await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise unavailable(exc) from exc


class KafkaConsumer:
    """The calls the bus and the live hub make on an ``AIOKafkaConsumer``."""

    def __init__(self, *topics: str, **config: object) -> None:
        self._consumer: Any = AIOKafkaConsumer(*topics, **config)

    async def start(self) -> None:
        """Connect (and join the group, when there is one)."""
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise unavailable(exc) from exc

    async def stop(self) -> None:
        """Leave the group and disconnect."""
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Partition, Sequence[Record]]:
        """The records fetched, by partition (empty after ``timeout_ms`` without any)."""
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise unavailable(exc) from exc
        return {
            Partition(tp.topic, tp.partition): cast(Sequence[Record], records)
            for tp, records in batches.items()
        }

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit ``offsets``; :class:`CommitFailed` when a rebalance took them away."""
        try:
            await self._consumer.commit({_tp(p): o for p, o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitFailed(str(exc)) from exc
        except KafkaError as exc:
            raise unavailable(exc) from exc

    def assignment(self) -> set[Partition]:
        """The partitions this consumer holds now."""
        return {Partition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def highwater(self, partition: Partition) -> int | None:
        """The high watermark the last fetch reported; ``None`` before one did, or when the
        partition is no longer held."""
        try:
            highwater: int | None = self._consumer.highwater(_tp(partition))
        except (AssertionError, IllegalStateError):
            return None
        return highwater

    async def position(self, partition: Partition) -> int:
        """The offset of the next record to fetch (waits until it is known)."""
        try:
            found: int = await self._consumer.position(_tp(partition))
        except KafkaError as exc:
            raise unavailable(exc) from exc
        return found

    async def position_within(self, partition: Partition, timeout_s: float) -> int | None:
        """The position when known within ``timeout_s``; ``None`` when not, or when the
        partition is no longer held."""
        try:
            found: int = await asyncio.wait_for(self._consumer.position(_tp(partition)), timeout_s)
        except (AssertionError, IllegalStateError, TimeoutError):
            return None
        return found

    async def topics(self) -> set[str]:
        """Every topic of the cluster (refreshes the metadata)."""
        try:
            found: set[str] = await self._consumer.topics()
        except KafkaError as exc:
            raise unavailable(exc) from exc
        return found

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The partition numbers of ``topic``, or ``None`` when it is unknown."""
        found: set[int] | None = self._consumer.partitions_for_topic(topic)
        return found

    def assign(self, partitions: Iterable[Partition]) -> None:
        """Read exactly ``partitions`` (no group)."""
        self._consumer.assign([_tp(p) for p in partitions])

    async def seek_to_end(self, *partitions: Partition) -> None:
        """Start ``partitions`` at their latest offsets."""
        await self._consumer.seek_to_end(*(_tp(p) for p in partitions))


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: partitions, replication and its configuration."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


async def create_topics(
    bootstrap_servers: str, specs: Sequence[TopicSpec], client_id: str = "lodestar-admin"
) -> list[tuple[str, int, str]]:
    """Ask the cluster to create ``specs``; ``(topic, error code, message)`` per topic."""
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=client_id)
    try:
        await admin.start()
        try:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs)
                    )
                    for s in specs
                ]
            )
        finally:
            await admin.close()
    except KafkaError as exc:
        raise unavailable(exc) from exc
    return [(str(name), int(code), str(message)) for name, code, message in response.topic_errors]
