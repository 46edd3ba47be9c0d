"""Alias calls over a real MongoDB-wire server (and Kafka for the consumer): the previous id
links to the new user id through the graph's own rules, exactly as an event carrying both
identifiers would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import KafkaWireServer
from lodestar.v1 import common_pb2, events_pb2
from services.identity.consumers import RawEventHandler
from services.identity.resolution import EventIdentifiers
from services.identity.store import IdentityStore
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.mongo import Document
from tests.support.identity import T0, event, fresh_store, resolver
from tests.support.kafka import read_all, unique


@pytest.fixture
async def store(client: AsyncIOMotorClient[Document]) -> IdentityStore:
    return await fresh_store(client)


def alias(
    event_id: str, user_id: str, previous_id: str, *others: tuple[str, str], minute: int = 30
) -> EventIdentifiers:
    """An alias call: ``previous_id`` is linked to ``user_id``."""
    return EventIdentifiers(
        event_id,
        [("user_id", user_id), *others],
        "web",
        T0 + timedelta(minutes=minute),
        previous_id=previous_id,
    )


async def values_of(store: IdentityStore, customer_id: str) -> set[tuple[str, str]]:
    return {(i.type, i.value) for i in await store.identities(customer_id)}


async def test_alias_merges_anonymous_history_into_the_known_user(store: IdentityStore) -> None:
    r = resolver(store)
    visitor = await r.resolve([event("e1", ("anonymous_id", "anon-1"), minute=0)])
    user = await r.resolve([event("e2", ("user_id", "u-1"), minute=5)])
    assert visitor.customer_ids != user.customer_ids

    linked = await r.resolve([alias("e3", "u-1", "anon-1")])
    survivor = visitor.customer_ids[0]  # the older customer survives
    assert linked.customer_ids == [survivor]
    [merge] = linked.merges
    assert merge.survivor_id == survivor
    assert merge.merged_ids == user.customer_ids
    assert merge.caused_by_event_id == "e3"
    assert await store.current_id(user.customer_ids[0]) == survivor
    assert await values_of(store, survivor) == {("user_id", "u-1"), ("anonymous_id", "anon-1")}


async def test_alias_attaches_the_new_user_id_to_the_anonymous_customer(
    store: IdentityStore,
) -> None:
    r = resolver(store)
    visitor = await r.resolve([event("e1", ("anonymous_id", "anon-2"))])
    linked = await r.resolve([alias("e2", "u-2", "anon-2")])
    assert linked.customer_ids == visitor.customer_ids
    assert linked.created == [False]
    assert linked.merges == []
    assert await values_of(store, visitor.customer_ids[0]) == {
        ("user_id", "u-2"),
        ("anonymous_id", "anon-2"),
    }


async def test_alias_attaches_an_unknown_previous_id_as_anonymous(store: IdentityStore) -> None:
    r = resolver(store)
    user = await r.resolve([event("e1", ("user_id", "u-3"))])
    linked = await r.resolve([alias("e2", "u-3", "never-seen")])
    assert linked.customer_ids == user.customer_ids
    assert await values_of(store, user.customer_ids[0]) == {
        ("user_id", "u-3"),
        ("anonymous_id", "never-seen"),
    }
    # Later events of that anonymous visitor land on the customer.
    later = await r.resolve([event("e3", ("anonymous_id", "never-seen"), minute=40)])
    assert later.customer_ids == user.customer_ids


async def test_alias_of_two_user_ids_is_a_conflict_and_merges_nothing(
    store: IdentityStore,
) -> None:
    r = resolver(store)
    old = await r.resolve([event("e1", ("user_id", "old-login"), ("anonymous_id", "a-1"))])
    new = await r.resolve([event("e2", ("user_id", "new-login"), minute=1)])
    linked = await r.resolve([alias("e3", "new-login", "old-login")])
    assert linked.merges == []
    assert linked.conflicts == 1
    assert linked.customer_ids[0] in {old.customer_ids[0], new.customer_ids[0]}
    [conflict] = await store.conflicts.find({"event_id": "e3"}).to_list(None)
    assert conflict["type"] == "user_id"
    assert "limit of 1 user_id" in conflict["reason"]
    assert await values_of(store, old.customer_ids[0]) == {
        ("user_id", "old-login"),
        ("anonymous_id", "a-1"),
    }
    assert await values_of(store, new.customer_ids[0]) == {("user_id", "new-login")}
    # Known as a user id, the previous id is never taken for an anonymous id too.
    assert await store.owner_of(store.key_of("anonymous_id", "old-login")) is None


async def test_alias_redelivered_changes_nothing(store: IdentityStore) -> None:
    r = resolver(store)
    await r.resolve([event("e1", ("anonymous_id", "anon-4"))])
    await r.resolve([event("e2", ("user_id", "u-4"), minute=1)])
    first = await r.resolve([alias("e3", "u-4", "anon-4")])
    identifiers = await store.identifiers.count_documents({})
    again = await r.resolve([alias("e3", "u-4", "anon-4")])
    assert again.customer_ids == first.customer_ids
    assert again.merges == []
    assert await store.identifiers.count_documents({}) == identifiers == 2
    assert await store.merges.count_documents({}) == 1


async def test_unusable_previous_id_is_ignored_and_the_user_resolves(
    store: IdentityStore,
) -> None:
    r = resolver(store)
    user = await r.resolve([event("e1", ("user_id", "u-5"))])
    linked = await r.resolve([alias("e2", "u-5", "undefined"), alias("e3", "u-5", " ")])
    assert linked.customer_ids == user.customer_ids * 2
    assert await values_of(store, user.customer_ids[0]) == {("user_id", "u-5")}


async def test_alias_in_the_same_batch_as_the_anonymous_history(store: IdentityStore) -> None:
    r = resolver(store)
    outcome = await r.resolve(
        [
            event("e1", ("anonymous_id", "anon-6"), minute=0),
            alias("e2", "u-6", "anon-6", minute=1),
            event("e3", ("user_id", "u-6"), minute=2),
        ]
    )
    assert len(set(outcome.customer_ids)) == 1


@pytest.fixture
async def bus(kafka_server: KafkaWireServer) -> AsyncIterator[Bus]:
    await ensure_topics(
        kafka_server.bootstrap_servers,
        dict.fromkeys([topics.EVENTS_RESOLVED, topics.IDENTITY_MERGED], 6),
    )
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, "test-identity-alias"))
    await bus.start()
    yield bus
    await bus.stop()


def raw(
    event_id: str, kind: events_pb2.EventType.ValueType, *ids: tuple[str, str], previous: str = ""
) -> Delivery[events_pb2.Event]:
    message = events_pb2.Event(
        event_id=event_id,
        type=kind,
        identifiers=[common_pb2.Identifier(type=t, value=v) for t, v in ids],
        source="test",
        previous_id=previous,
    )
    message.received_at.FromDatetime(datetime.now(UTC))
    return Delivery("raw", 0, 0, None, message.SerializeToString(), message)


async def test_consumer_links_an_alias_and_announces_the_merge(
    store: IdentityStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    tag = unique("alias")
    handler = RawEventHandler(resolver(store), bus)
    await (await handler([raw(f"{tag}-1", events_pb2.EVENT_TYPE_PAGE, ("anonymous_id", tag))]))
    await (await handler([raw(f"{tag}-2", events_pb2.EVENT_TYPE_TRACK, ("user_id", f"{tag}-u"))]))
    alias_call = raw(f"{tag}-3", events_pb2.EVENT_TYPE_ALIAS, ("user_id", f"{tag}-u"), previous=tag)
    await (await handler([alias_call]))
    # previous_id means something only on an alias call.
    stray = raw(f"{tag}-4", events_pb2.EVENT_TYPE_TRACK, ("user_id", f"{tag}-v"), previous=tag)
    await (await handler([stray]))

    resolved = {
        e.event_id: e.customer_id
        for r in await read_all(kafka_server.bootstrap_servers, topics.EVENTS_RESOLVED)
        if (e := events_pb2.Event.FromString(r.value)).event_id.startswith(tag)
    }
    assert resolved[f"{tag}-3"] == resolved[f"{tag}-1"]
    assert resolved[f"{tag}-4"] != resolved[f"{tag}-1"]
    merges = [
        events_pb2.IdentityMerged.FromString(r.value)
        for r in await read_all(kafka_server.bootstrap_servers, topics.IDENTITY_MERGED)
    ]
    [merge] = [m for m in merges if m.caused_by_event_id == f"{tag}-3"]
    assert merge.survivor_id == resolved[f"{tag}-1"]
    assert list(merge.merged_ids) == [resolved[f"{tag}-2"]]
