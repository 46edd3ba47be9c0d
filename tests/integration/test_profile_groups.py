"""Groups over real SecantusDB and a real gRPC channel: group calls store the group (traits
last-write-wins by event time) and link customers; redeliveries, merges and erasure; the
ProfileService's GetGroup and BatchListCustomerGroups."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from infra.local.servers import MongoWireServer
from lodestar.v1 import events_pb2, profile_pb2, profile_pb2_grpc
from services.platform.bus import Delivery
from services.platform.mongo import database, mongo_client
from services.platform.rpc import GrpcServer, client_channel
from services.profile.api import ProfileServicer
from services.profile.consumers import ResolvedEventHandler, merge_handler
from services.profile.server import SERVICE_NAME
from services.profile.store import ProfileStore
from tests.support.identity import cipher
from tests.support.kafka import unique

T0 = datetime(2026, 2, 1, 9, tzinfo=UTC)


class Served:
    def __init__(self, store: ProfileStore, stub: profile_pb2_grpc.ProfileServiceAsyncStub) -> None:
        self.store = store
        self.stub = stub
        self.handler = ResolvedEventHandler(store)


@pytest.fixture
async def served(mongo_server: MongoWireServer) -> AsyncIterator[Served]:
    client = mongo_client(mongo_server.uri, "tests")
    store = ProfileStore(
        database(client, unique("grp").replace("-", "_"), "profile"),
        100,
        cipher(),
        frozenset({"email", "name"}),
    )
    await store.ensure_indexes()

    def register(server: grpc.aio.Server) -> None:
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(store), server)

    server = GrpcServer("127.0.0.1", 0, [SERVICE_NAME], register, default_deadline_s=5)
    await server.start()
    channel = client_channel(f"127.0.0.1:{server.port}")
    yield Served(store, profile_pb2_grpc.ProfileServiceStub(channel))
    await channel.close()
    await server.stop(0)
    client.close()


def group_call(
    event_id: str, customer: str, group_id: str, minute: int = 0, **traits: Any
) -> Delivery[events_pb2.Event]:
    values = Struct()
    values.update(traits)
    event = events_pb2.Event(
        event_id=event_id,
        customer_id=customer,
        type=events_pb2.EVENT_TYPE_GROUP,
        group_id=group_id,
        traits=values,
        source="web",
    )
    event.timestamp.FromDatetime(T0 + timedelta(minutes=minute))
    event.received_at.FromDatetime(datetime.now(UTC))
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


def merged(event_id: str, survivor: str, *merged_ids: str) -> Delivery[events_pb2.IdentityMerged]:
    message = events_pb2.IdentityMerged(
        event_id=event_id, survivor_id=survivor, merged_ids=list(merged_ids)
    )
    return Delivery("merged", 0, 0, None, message.SerializeToString(), message)


async def groups_of(served: Served, *customers: str) -> dict[str, list[str]]:
    reply = await served.stub.BatchListCustomerGroups(
        profile_pb2.BatchListCustomerGroupsRequest(customer_ids=list(customers)), timeout=5
    )
    return {c: [g.id for g in reply.customers[c].groups] for c in reply.customers}


async def test_group_calls_make_a_group_of_their_own(served: Served) -> None:
    await served.handler(
        [
            group_call("e1", "ada", "acme", 0, name="Acme Inc", plan="pro", employees=100),
            group_call("e2", "bob", "acme", 5, plan="enterprise"),
            group_call("e3", "ada", "home-7", 6, kind="household"),
        ]
    )
    group = await served.stub.GetGroup(profile_pb2.GetGroupRequest(group_id="acme"), timeout=5)
    assert group.id == "acme"
    assert MessageToDict(group.traits) == {
        "name": "Acme Inc",
        "plan": "enterprise",
        "employees": 100,
    }
    assert group.member_count == 2
    assert group.created_at.ToDatetime(UTC) == T0
    assert group.updated_at.ToDatetime(UTC) == T0 + timedelta(minutes=5)
    assert await groups_of(served, "ada", "bob", "nobody") == {
        "ada": ["acme", "home-7"],
        "bob": ["acme"],
        "nobody": [],
    }
    # The customers' own traits hold none of the groups'.
    profile = await served.store.get("ada")
    assert profile is not None
    assert profile.traits == {}


async def test_older_group_traits_arriving_late_do_not_win(served: Served) -> None:
    await served.handler([group_call("new", "ada", "acme", 10, plan="enterprise")])
    await served.handler([group_call("old", "ada", "acme", 1, plan="trial", seats=5)])
    group = await served.store.get_group("acme")
    assert group is not None
    assert group.traits == {"plan": "enterprise", "seats": 5}
    assert group.created_at == T0 + timedelta(minutes=1)


async def test_redelivered_group_calls_change_nothing(served: Served) -> None:
    batch = [group_call("e1", "ada", "acme", 0, plan="pro"), group_call("e2", "bob", "acme", 1)]
    await served.handler(batch)
    before = await served.store.groups.find_one({"_id": "acme"})
    await served.handler(batch)
    await served.handler(batch[:1])
    assert await served.store.groups.find_one({"_id": "acme"}) == before
    assert await served.store.group_members.count_documents({}) == 2


async def test_pii_group_traits_rest_encrypted(served: Served) -> None:
    await served.handler([group_call("e1", "ada", "acme", email="billing@acme.example")])
    stored = await served.store.groups.find_one({"_id": "acme"})
    assert stored is not None
    assert "billing@acme.example" not in repr(stored)
    group = await served.store.get_group("acme")
    assert group is not None
    assert group.traits == {"email": "billing@acme.example"}


async def test_merges_move_the_links_to_the_survivor(served: Served) -> None:
    await served.handler(
        [
            group_call("e1", "ada", "acme"),
            group_call("e2", "ada-laptop", "acme", 1),
            group_call("e3", "ada-laptop", "home-7", 2),
        ]
    )
    merge = merge_handler(served.store)
    await merge([merged("m1", "ada", "ada-laptop")])
    await merge([merged("m1", "ada", "ada-laptop")])  # redelivered
    assert await groups_of(served, "ada", "ada-laptop") == {
        "ada": ["acme", "home-7"],
        "ada-laptop": ["acme", "home-7"],  # a merged id answers with its survivor's
    }
    acme = await served.store.get_group("acme")
    assert acme is not None
    assert acme.member_count == 1
    # A group call still in flight for the merged id links the survivor.
    await served.handler([group_call("e4", "ada-laptop", "club", 3)])
    assert await served.store.group_members.count_documents({"customer_id": "ada-laptop"}) == 0
    assert (await groups_of(served, "ada"))["ada"] == ["acme", "club", "home-7"]


async def test_erasure_removes_the_customers_links(served: Served) -> None:
    await served.handler(
        [group_call("e1", "ada", "acme", plan="pro"), group_call("e2", "bob", "acme", 1)]
    )
    assert (await served.store.export("ada"))["groups"] == ["acme"]  # privacy export
    await served.store.erase("ada")
    assert await groups_of(served, "ada", "bob") == {"ada": [], "bob": ["acme"]}
    acme = await served.store.get_group("acme")
    assert acme is not None
    assert acme.member_count == 1
    assert acme.traits == {"plan": "pro"}  # the account's own data stays


async def test_group_rpcs_refuse_bad_ids_and_unknown_groups(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await served.stub.GetGroup(profile_pb2.GetGroupRequest(group_id="nope"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for request in (
        profile_pb2.GetGroupRequest(group_id=""),
        profile_pb2.GetGroupRequest(group_id="g" * 10_000),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await served.stub.GetGroup(request, timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "group_id" in (bad.value.details() or "")
        assert "g" * 600 not in (bad.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await served.stub.BatchListCustomerGroups(
            profile_pb2.BatchListCustomerGroupsRequest(customer_ids=["c"] * 1_001), timeout=5
        )
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class StaleFirstRead(ProfileStore):
    """Its first look-up of merged customers misses a merge, as one racing it would."""

    stale = True

    async def current_ids(self, customer_ids: Iterable[str]) -> dict[str, str]:
        if self.stale:
            self.stale = False
            return {c: c for c in customer_ids}
        return await super().current_ids(customer_ids)


async def test_a_link_written_while_a_merge_moved_links_follows_the_merge(
    served: Served,
) -> None:
    await merge_handler(served.store)([merged("m1", "ada", "ada-laptop")])
    racing = StaleFirstRead(served.store.db, 100, served.store.cipher, served.store.pii_traits)
    await ResolvedEventHandler(racing)([group_call("e1", "ada-laptop", "acme")])
    assert await served.store.group_members.count_documents({"customer_id": "ada-laptop"}) == 0
    assert (await groups_of(served, "ada"))["ada"] == ["acme"]
