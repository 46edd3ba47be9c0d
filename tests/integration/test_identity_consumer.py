"""The identity consumer's batch resolution over real SecantusDB and Tansu."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest

from infra.local.servers import KafkaWireServer, MongoWireServer
from lodestar.v1 import common_pb2, events_pb2
from services.identity.consumers import RawEventHandler
from services.identity.graph import IdentifierValue, Ownership
from services.identity.store import IdentityStore, Link
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.mongo import database, mongo_client
from tests.support.kafka import read_all, unique


class StaleStore(IdentityStore):
    """Answers the first owners() read as if another consumer had not linked yet."""

    stale_reads = 1

    async def owners(self, identifiers: Sequence[IdentifierValue]) -> dict[str, Ownership]:
        if self.stale_reads:
            self.stale_reads -= 1
            return {}
        return await super().owners(identifiers)


@pytest.fixture
async def bus(kafka_server: KafkaWireServer) -> AsyncIterator[Bus]:
    await ensure_topics(kafka_server.bootstrap_servers, {topics.EVENTS_RESOLVED: 6})
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, "test-identity"))
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def store(mongo_server: MongoWireServer) -> AsyncIterator[StaleStore]:
    client = mongo_client(mongo_server.uri, "tests")
    store = StaleStore(database(client, unique("id").replace("-", "_"), "identity"))
    await store.ensure_indexes()
    yield store
    client.close()


def raw(event_id: str, *identifiers: tuple[str, str]) -> Delivery[events_pb2.Event]:
    event = events_pb2.Event(
        event_id=event_id,
        type=events_pb2.EVENT_TYPE_TRACK,
        name="Tested",
        identifiers=[common_pb2.Identifier(type=t, value=v) for t, v in identifiers],
        source="test",
    )
    return Delivery("raw", 0, 0, None, event.SerializeToString(), event)


async def resolved(kafka: KafkaWireServer, event_ids: set[str]) -> dict[str, str]:
    records = await read_all(kafka.bootstrap_servers, topics.EVENTS_RESOLVED)
    events = [events_pb2.Event.FromString(r.value) for r in records]
    return {e.event_id: e.customer_id for e in events if e.event_id in event_ids}


async def test_batch_links_anonymous_and_known_user_to_one_customer(
    store: StaleStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    store.stale_reads = 0
    tag = unique("b")
    anon, user = ("anonymous_id", f"{tag}-anon"), ("user_id", f"{tag}-user")
    ids = {f"{tag}-1", f"{tag}-2", f"{tag}-3"}
    await RawEventHandler(store, bus)(
        [raw(f"{tag}-1", anon), raw(f"{tag}-2", anon, user), raw(f"{tag}-3", user)]
    )
    customers = await resolved(kafka_server, ids)
    assert set(customers) == ids
    assert len(set(customers.values())) == 1
    owner = await store.owner_of(IdentifierValue(*user))
    assert owner == customers[f"{tag}-1"]


async def test_identifier_linked_by_another_consumer_meanwhile_wins(
    store: StaleStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    tag = unique("race")
    email = IdentifierValue("email", f"{tag}@example.com")
    # Another identity replica linked the e-mail after this one read the graph.
    await store.link([Link("cust-other", email, "app", datetime.now(UTC))])
    await RawEventHandler(store, bus)(
        [raw(f"{tag}-1", ("email", email.value)), raw(f"{tag}-2", ("user_id", f"{tag}-u"))]
    )
    customers = await resolved(kafka_server, {f"{tag}-1", f"{tag}-2"})
    assert customers[f"{tag}-1"] == "cust-other"
    assert customers[f"{tag}-2"] != "cust-other"
    assert store.stale_reads == 0


async def test_last_seen_is_rewritten_at_most_once_per_resolution(
    store: StaleStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    from datetime import timedelta

    store.stale_reads = 0
    tag = unique("seen")
    user = IdentifierValue("user_id", f"{tag}-u")

    def at(event_id: str, seconds: int) -> Delivery[events_pb2.Event]:
        delivery = raw(event_id, (user.type, user.value))
        delivery.message.received_at.FromDatetime(
            datetime(2026, 5, 1, tzinfo=UTC) + timedelta(seconds=seconds)
        )
        return delivery

    handler = RawEventHandler(store, bus, last_seen_resolution=timedelta(minutes=1))
    await handler([at(f"{tag}-1", 0)])
    await handler([at(f"{tag}-2", 30)])  # within the minute: no write
    assert (await store.owners([user]))[user.key].last_seen.second == 0
    await handler([at(f"{tag}-3", 61)])  # a minute later: written
    assert (await store.owners([user]))[user.key].last_seen.minute == 1
