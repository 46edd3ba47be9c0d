"""The identity service's Kafka handlers over real SecantusDB and Tansu: resolved events and
merges out after the graph is stored; privacy erasures in, completions out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import KafkaWireServer, MongoWireServer
from lodestar.v1 import common_pb2, events_pb2
from services.identity.consumers import RawEventHandler, identity_export
from services.identity.store import IdentityStore
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, Pending, ensure_topics
from services.platform.errors import PoisonMessage
from services.platform.mongo import Document, mongo_client
from services.platform.privacy import PrivacyHandler
from tests.support.identity import event, fresh_store, resolver
from tests.support.kafka import read_all, unique


@pytest.fixture
async def bus(kafka_server: KafkaWireServer) -> AsyncIterator[Bus]:
    await ensure_topics(
        kafka_server.bootstrap_servers,
        dict.fromkeys(
            [topics.EVENTS_RESOLVED, topics.IDENTITY_MERGED, topics.PRIVACY_COMPLETED], 6
        ),
    )
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, "test-identity"))
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def store(mongo_server: MongoWireServer) -> AsyncIterator[IdentityStore]:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    yield await fresh_store(client)
    client.close()


def raw(
    event_id: str, *identifiers: tuple[str, str], at: datetime | None = None
) -> Delivery[events_pb2.Event]:
    event = events_pb2.Event(
        event_id=event_id,
        type=events_pb2.EVENT_TYPE_TRACK,
        name="Tested",
        identifiers=[common_pb2.Identifier(type=t, value=v) for t, v in identifiers],
        source="test",
    )
    event.received_at.FromDatetime(at or datetime.now(UTC))
    return Delivery("raw", 0, 0, None, event.SerializeToString(), event)


async def test_resolved_events_and_merges_are_published(
    store: IdentityStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    tag = unique("b")
    anon1, anon2, user = (
        ("anonymous_id", f"{tag}-1"),
        ("anonymous_id", f"{tag}-2"),
        ("user_id", f"{tag}-u"),
    )
    handler = RawEventHandler(resolver(store), bus)
    earlier = datetime.now(UTC) - timedelta(minutes=1)
    await (await handler([raw(f"{tag}-a", anon1, at=earlier), raw(f"{tag}-b", anon2)]))
    await (await handler([raw(f"{tag}-c", anon1, user), raw(f"{tag}-d", anon2, user)]))

    resolved = [
        events_pb2.Event.FromString(r.value)
        for r in await read_all(kafka_server.bootstrap_servers, topics.EVENTS_RESOLVED)
    ]
    mine = {e.event_id: e.customer_id for e in resolved if e.event_id.startswith(tag)}
    assert set(mine) == {f"{tag}-a", f"{tag}-b", f"{tag}-c", f"{tag}-d"}
    survivor = mine[f"{tag}-a"]
    assert mine[f"{tag}-c"] == mine[f"{tag}-d"] == survivor
    merges = [
        events_pb2.IdentityMerged.FromString(r.value)
        for r in await read_all(kafka_server.bootstrap_servers, topics.IDENTITY_MERGED)
    ]
    [merge] = [m for m in merges if m.caused_by_event_id == f"{tag}-d"]
    assert merge.survivor_id == survivor
    assert list(merge.merged_ids) == [mine[f"{tag}-b"]]


async def test_event_without_usable_identifier_is_poison(store: IdentityStore, bus: Bus) -> None:
    handler = RawEventHandler(resolver(store), bus)
    with pytest.raises(PoisonMessage, match="no usable identifier"):
        await handler([raw("bad", ("anonymous_id", "undefined"), ("email", "not-an-email"))])


async def test_privacy_erasure_removes_identifiers_and_reports_done(
    store: IdentityStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    tag = unique("erase")
    outcome = await resolver(store).resolve(
        [event(f"{tag}-1", ("email", f"{tag}@example.com"), ("user_id", tag))]
    )
    customer = outcome.customer_ids[0]
    request = events_pb2.PrivacyRequest(
        request_id=f"{tag}-req", kind=events_pb2.PRIVACY_REQUEST_KIND_ERASE, customer_id=customer
    )
    delivery = Delivery("privacy", 0, 0, None, request.SerializeToString(), request)
    handler = PrivacyHandler(
        "identity",
        bus,
        erase=lambda customer_id: store.erase(customer_id, datetime.now(UTC)),
        export=identity_export(store),
    )
    await handler([delivery])
    await handler([delivery])  # redelivered: still fine
    assert await store.identifiers.count_documents({"customer_id": customer}) == 0
    assert await store.current_id(customer) is None
    completions = [
        events_pb2.PrivacyCompleted.FromString(r.value)
        for r in await read_all(kafka_server.bootstrap_servers, topics.PRIVACY_COMPLETED)
    ]
    mine = [c for c in completions if c.request_id == f"{tag}-req"]
    assert mine
    assert {c.service for c in mine} == {"identity"}
    assert mine[0].customer_id == customer


async def test_logs_never_contain_raw_pii(
    store: IdentityStore,
    bus: Bus,
    kafka_server: KafkaWireServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import logging

    from services.platform.logs import JsonFormatter, quiet_libraries

    tag = unique("pii").replace("-", "")
    secrets = [f"{tag}@secret.example", "+14155550142", f"broken{tag}@", "+1415555"]
    topic = unique("test.raw")
    await ensure_topics(kafka_server.bootstrap_servers, {topic: 1, topics.DEADLETTER: 3})
    events = [
        raw(f"{tag}-1", ("email", secrets[0]), ("phone", secrets[1])),
        raw(f"{tag}-2", ("email", secrets[2])),  # invalid: dead-lettered with a reason
        raw(f"{tag}-3", ("phone", secrets[3]), ("anonymous_id", f"{tag}-a")),
    ]
    await bus.publish_many([(topic, "k", d.message) for d in events])
    handled: list[str] = []
    handler = RawEventHandler(resolver(store), bus)

    async def recording(batch: Sequence[Delivery[events_pb2.Event]]) -> Pending:
        pending = await handler(batch)
        handled.extend(d.message.event_id for d in batch)
        return pending

    caplog.set_level(logging.DEBUG)
    quiet_libraries()  # as every service configures logging
    subscription = bus.subscribe([topic], unique("g"), events_pb2.Event, recording)
    task = asyncio.create_task(subscription.run())
    for _ in range(300):
        if {f"{tag}-1", f"{tag}-3"} <= set(handled):
            break
        await asyncio.sleep(0.1)
    await subscription.stop()
    await task
    assert {f"{tag}-1", f"{tag}-3"} <= set(handled)
    assert any("dead-lettered" in r.getMessage() for r in caplog.records)
    formatter = JsonFormatter("identity")
    text = "\n".join(formatter.format(r) for r in caplog.records)
    for secret in secrets:
        assert secret not in text
