"""The batch reads the GraphQL gateway's DataLoaders make, over real SecantusDB and real gRPC
channels: identity BatchGetIdentities, profile BatchListTimeline (event-name filter and
per-entry cursors that are page tokens) and paged BatchListCustomerGroups, recommendation
GetItems from the served catalog, and a segment member's cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import MongoWireServer
from lodestar.v1 import (
    events_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)
from services.identity.api import IdentityServicer
from services.identity.resolution import EventIdentifiers
from services.identity.server import SERVICE_NAME as IDENTITY
from services.platform.bus import Delivery
from services.platform.mongo import Document, database, mongo_client
from services.platform.rpc import GrpcServer, client_channel
from services.profile.api import ProfileServicer
from services.profile.consumers import ResolvedEventHandler
from services.profile.server import SERVICE_NAME as PROFILE
from services.profile.store import ProfileStore
from services.recommendation.api import RecommendationServicer
from services.recommendation.interactions import InteractionWeights
from services.recommendation.server import SERVICE_NAME as RECOMMENDATION
from services.recommendation.serving import Recommendations
from services.recommendation.store import RecommendationStore
from services.recommendation.trainer import Trainer, TrainingPlan
from services.recommendation.training import TrainingConfig
from tests.support.identity import T0, cipher, event, fresh_store, resolver
from tests.support.kafka import unique


async def serve(name: str, register: Any) -> tuple[GrpcServer, grpc.aio.Channel]:
    server = GrpcServer("127.0.0.1", 0, [name], register, default_deadline_s=10)
    await server.start()
    return server, client_channel(f"127.0.0.1:{server.port}")


def code_and_details(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details() or ""


# --- identity -------------------------------------------------------------------------------


@pytest.fixture
async def identity(
    client: AsyncIOMotorClient[Document],
) -> AsyncIterator[tuple[identity_pb2_grpc.IdentityServiceAsyncStub, Any]]:
    store = await fresh_store(client)
    servicer = IdentityServicer(store, resolver(store))
    server, channel = await serve(
        IDENTITY, lambda s: identity_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, s)
    )
    yield identity_pb2_grpc.IdentityServiceStub(channel), resolver(store)
    await channel.close()
    await server.stop(0)


async def test_batch_get_identities_answers_many_customers_and_merged_ids_with_survivors(
    identity: tuple[identity_pb2_grpc.IdentityServiceAsyncStub, Any],
) -> None:
    stub, r = identity
    ada = await r.resolve([event("e1", ("user_id", "ada"), ("email", "ada@example.com"))])
    bob = await r.resolve([event("e2", ("user_id", "bob"), minute=1)])
    anon = await r.resolve([event("e3", ("anonymous_id", "anon-9"), minute=2)])
    # An alias of anon-9 to ada merges the newer anonymous customer into ada.
    await r.resolve(
        [
            EventIdentifiers(
                "e4", [("user_id", "ada")], "web", T0 + timedelta(minutes=3), previous_id="anon-9"
            )
        ]
    )
    [ada_id], [bob_id], [anon_id] = ada.customer_ids, bob.customer_ids, anon.customer_ids
    reply = await stub.BatchGetIdentities(
        identity_pb2.BatchGetIdentitiesRequest(
            customer_ids=[bob_id, ada_id, "no-such-customer", anon_id]
        )
    )
    assert set(reply.identities) == {ada_id, bob_id, anon_id}
    assert reply.identities[bob_id].customer_id == bob_id
    assert [(i.type, i.value) for i in reply.identities[bob_id].identifiers] == [("user_id", "bob")]
    survivor = reply.identities[ada_id].customer_id
    assert reply.identities[anon_id].customer_id == survivor
    assert {(i.type, i.value) for i in reply.identities[ada_id].identifiers} == {
        ("user_id", "ada"),
        ("email", "ada@example.com"),
        ("anonymous_id", "anon-9"),
    }
    # The same answer GetIdentities gives one by one.
    one = await stub.GetIdentities(identity_pb2.GetIdentitiesRequest(customer_id=ada_id))
    assert one == reply.identities[ada_id]


async def test_batch_get_identities_refuses_too_many_ids_naming_the_field(
    identity: tuple[identity_pb2_grpc.IdentityServiceAsyncStub, Any],
) -> None:
    stub, _ = identity
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.BatchGetIdentities(
            identity_pb2.BatchGetIdentitiesRequest(customer_ids=[f"c{n}" for n in range(1_001)])
        )
    assert code_and_details(refused.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "customer_ids: at most 1000 per call",
    )


# --- profile --------------------------------------------------------------------------------


class Profile:
    def __init__(self, store: ProfileStore, stub: profile_pb2_grpc.ProfileServiceAsyncStub) -> None:
        self.store = store
        self.stub = stub
        self.handler = ResolvedEventHandler(store)


@pytest.fixture
async def profile(mongo_server: MongoWireServer) -> AsyncIterator[Profile]:
    client = mongo_client(mongo_server.uri, "tests")
    store = ProfileStore(
        database(client, unique("reads").replace("-", "_"), "profile"),
        100,
        cipher(),
        frozenset({"email", "name"}),
    )
    await store.ensure_indexes()
    server, channel = await serve(
        PROFILE,
        lambda s: profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(store), s),
    )
    yield Profile(store, profile_pb2_grpc.ProfileServiceStub(channel))
    await channel.close()
    await server.stop(0)
    client.close()


def resolved(
    event_id: str,
    customer: str,
    minute: int,
    name: str = "",
    group_id: str = "",
    **properties: Any,
) -> Delivery[events_pb2.Event]:
    values = Struct()
    values.update(properties)
    message = events_pb2.Event(
        event_id=event_id,
        customer_id=customer,
        type=events_pb2.EVENT_TYPE_GROUP if group_id else events_pb2.EVENT_TYPE_TRACK,
        name=name,
        group_id=group_id,
        source="web",
    )
    if group_id:
        message.traits.CopyFrom(values)
    else:
        message.properties.CopyFrom(values)
    message.timestamp.FromDatetime(datetime(2026, 3, 1, 9, tzinfo=UTC) + timedelta(minutes=minute))
    message.received_at.FromDatetime(datetime.now(UTC))
    return Delivery("resolved", 0, 0, None, message.SerializeToString(), message)


def page(
    customer: str, size: int, token: str = "", names: tuple[str, ...] = ()
) -> profile_pb2.ListTimelineRequest:
    return profile_pb2.ListTimelineRequest(
        customer_id=customer, page_size=size, page_token=token, names=names
    )


async def test_batch_list_timeline_pages_each_customer_with_a_name_filter(
    profile: Profile,
) -> None:
    await profile.handler(
        [
            resolved("a1", "ada", 1, "Product Viewed", product_id="p1"),
            resolved("a2", "ada", 2, "Order Completed", order_id="o1", total=30, currency="eur"),
            resolved("a3", "ada", 3, "Product Viewed", product_id="p2"),
            resolved("a4", "ada", 4, "Order Completed", order_id="o2", total=12.5),
            resolved("a5", "ada", 5, "Order Refunded", order_id="o1"),
            resolved("b1", "bob", 1, "Product Viewed", product_id="p3"),
        ]
    )
    orders = ("Order Completed", "Order Refunded")
    reply = await profile.stub.BatchListTimeline(
        profile_pb2.BatchListTimelineRequest(
            requests=[page("ada", 2, names=orders), page("bob", 5), page("nobody", 5)]
        )
    )
    ada, bob, nobody = reply.responses
    assert [e.event_id for e in ada.entries] == ["a5", "a4"]
    assert [e.event_id for e in bob.entries] == ["b1"]
    assert list(nobody.entries) == []
    assert ada.next_page_token
    assert not bob.next_page_token
    # The last entry's cursor is the next page's token; any entry's cursor continues after it.
    assert ada.entries[-1].cursor == ada.next_page_token
    rest = await profile.stub.BatchListTimeline(
        profile_pb2.BatchListTimelineRequest(
            requests=[
                page("ada", 2, ada.next_page_token, orders),
                page("ada", 2, ada.entries[0].cursor, orders),
                page("ada", 10),
            ]
        )
    )
    after_page, after_first, everything = rest.responses
    assert [e.event_id for e in after_page.entries] == ["a2"]
    assert after_page.next_page_token == ""
    assert [e.event_id for e in after_first.entries] == ["a4", "a2"]
    assert [e.event_id for e in everything.entries] == ["a5", "a4", "a3", "a2", "a1"]
    # One at a time answers the same.
    single = await profile.stub.ListTimeline(page("ada", 2, names=orders))
    assert list(single.entries) == list(ada.entries)


async def test_batch_list_timeline_names_the_bad_request_and_reads_nothing(
    profile: Profile,
) -> None:
    cases = [
        ([page("ada", 5), page("bob", 201)], "requests[1].page_size must be between 1 and 200"),
        ([page("ada", 5, "not-a-token")], "requests[0].page_token is not one this service issued"),
        ([page("", 5)], "requests[0].customer_id"),
        ([page("ada", 5, names=("x" * 300,))], "requests[0].names[0]"),
        ([page("ada", 1)] * 1_001, "requests: at most 1000 per call"),
    ]
    for requests, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await profile.stub.BatchListTimeline(
                profile_pb2.BatchListTimelineRequest(requests=requests)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (refused.value.details() or ""), refused.value.details()


async def test_groups_come_a_page_at_a_time_with_cursors(profile: Profile) -> None:
    await profile.handler(
        [
            resolved(f"g{n}", "ada", n, group_id=group, plan="pro")
            for n, group in enumerate(["acme", "beta", "corp"])
        ]
        + [resolved("g9", "bob", 9, group_id="beta")]
    )

    async def groups(size: int, token: str = "") -> dict[str, profile_pb2.CustomerGroups]:
        reply = await profile.stub.BatchListCustomerGroups(
            profile_pb2.BatchListCustomerGroupsRequest(
                customer_ids=["ada", "bob", "nobody"], page_size=size, page_token=token
            )
        )
        return dict(reply.customers)

    first = await groups(2)
    assert [g.id for g in first["ada"].groups] == ["acme", "beta"]
    assert [g.id for g in first["bob"].groups] == ["beta"]
    assert list(first["nobody"].groups) == []
    assert first["ada"].next_page_token == first["ada"].cursors[-1]
    assert first["bob"].next_page_token == ""
    second = await groups(2, first["ada"].next_page_token)
    assert [g.id for g in second["ada"].groups] == ["corp"]
    assert second["ada"].next_page_token == ""
    # Without a page size every group comes, as before.
    everything = await groups(0)
    assert [g.id for g in everything["ada"].groups] == ["acme", "beta", "corp"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await groups(2, "%%%")
    assert code_and_details(refused.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token is not one this service issued",
    )


# --- recommendation -------------------------------------------------------------------------


@pytest.fixture
async def recommendation(
    mongo_server: MongoWireServer,
) -> AsyncIterator[recommendation_pb2_grpc.RecommendationServiceAsyncStub]:
    client = mongo_client(mongo_server.uri, "tests")
    store = RecommendationStore(database(client, unique("items").replace("-", "_"), "rec"))
    await store.ensure_indexes()
    serving = Recommendations(store)
    plan = TrainingPlan(
        config=TrainingConfig(factors=4), weights=InteractionWeights(), keep_models=1
    )
    servicer = RecommendationServicer(serving, Trainer(store, serving, plan), store)
    server, channel = await serve(
        RECOMMENDATION,
        lambda s: recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(servicer, s),
    )
    yield recommendation_pb2_grpc.RecommendationServiceStub(channel)
    await channel.close()
    await server.stop(0)
    client.close()


async def test_get_items_answers_catalog_items_by_id(
    recommendation: recommendation_pb2_grpc.RecommendationServiceAsyncStub,
) -> None:
    await recommendation.ImportCatalog(
        recommendation_pb2.ImportCatalogRequest(
            items=[
                recommendation_pb2.CatalogItem(
                    item_id="boots",
                    name="Boots",
                    category="shoes",
                    price=89.5,
                    image_url="https://img.example.com/b.png",
                ),
                recommendation_pb2.CatalogItem(item_id="socks", name="Socks"),
            ]
        )
    )
    reply = await recommendation.GetItems(
        recommendation_pb2.GetItemsRequest(item_ids=["socks", "unknown", "boots"])
    )
    assert set(reply.items) == {"boots", "socks"}
    boots = reply.items["boots"]
    assert (boots.name, boots.category, boots.price, boots.image_url) == (
        "Boots",
        "shoes",
        89.5,
        "https://img.example.com/b.png",
    )
    assert not reply.items["socks"].HasField("price")
    for ids, message in [([""], "item_ids[0] is required"), (["x"] * 1_001, "at most 1000")]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await recommendation.GetItems(recommendation_pb2.GetItemsRequest(item_ids=ids))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (refused.value.details() or "")
