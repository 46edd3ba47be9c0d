"""The gRPC bootstrap and the identity/profile servicers over a real channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from infra.local.servers import MongoWireServer
from lodestar.v1 import common_pb2, identity_pb2, identity_pb2_grpc, profile_pb2, profile_pb2_grpc
from services.identity.api import IdentityServicer
from services.identity.server import SERVICE_NAME as IDENTITY
from services.identity.store import IdentityStore
from services.platform.mongo import database, mongo_client
from services.platform.rpc import GrpcServer, client_channel
from services.profile.api import ProfileServicer
from services.profile.fold import ProfileDelta
from services.profile.server import SERVICE_NAME as PROFILE
from services.profile.store import ProfileStore
from tests.support.identity import fresh_store, resolver
from tests.support.kafka import unique


class Servers:
    def __init__(self, server: GrpcServer, identity: IdentityStore, profile: ProfileStore) -> None:
        self.server = server
        self.identity = identity
        self.profile = profile
        self.target = f"127.0.0.1:{server.port}"


@pytest.fixture
async def servers(mongo_server: MongoWireServer) -> AsyncIterator[Servers]:
    client = mongo_client(mongo_server.uri, "tests")
    prefix = unique("rpc").replace("-", "_")
    identity = await fresh_store(client)
    profile = ProfileStore(database(client, prefix, "profile"), 100)

    def register(server: grpc.aio.Server) -> None:
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(
            IdentityServicer(identity, resolver(identity)), server
        )
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(profile), server)

    server = GrpcServer("127.0.0.1", 0, [IDENTITY, PROFILE], register, default_deadline_s=2)
    await server.start()
    yield Servers(server, identity, profile)
    await server.stop(0)
    client.close()


async def test_health_serving_then_not_serving_on_stop(servers: Servers) -> None:
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", IDENTITY, PROFILE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=2)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(servers: Servers) -> None:
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for reply in stub.ServerReflectionInfo(iter([request]), timeout=2):
            names |= {s.name for s in reply.list_services_response.service}
    assert {IDENTITY, PROFILE, "grpc.health.v1.Health"} <= names


def ident(type_: str, value: str) -> common_pb2.Identifier:
    return common_pb2.Identifier(type=type_, value=value)


async def test_resolve_lookup_history_erase(servers: Servers) -> None:
    channel = client_channel(servers.target)
    try:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        first = await identity.Resolve(
            identity_pb2.ResolveRequest(
                identifiers=[ident("anonymous_id", "dev-1")], event_id="e1", source="web"
            )
        )
        assert first.created
        second = await identity.Resolve(
            identity_pb2.ResolveRequest(identifiers=[ident("anonymous_id", "dev-2")], event_id="e2")
        )
        merged = await identity.Resolve(
            identity_pb2.ResolveRequest(
                identifiers=[
                    ident("email", " ADA@example.com"),
                    ident("anonymous_id", "dev-1"),
                    ident("anonymous_id", "dev-2"),
                ],
                event_id="e3",
            )
        )
        assert merged.customer_id == first.customer_id
        assert list(merged.merged_ids) == [second.customer_id]
        assert not merged.created

        found = await identity.Lookup(
            identity_pb2.LookupRequest(identifier=ident("email", "ada@EXAMPLE.com "))
        )
        assert found.customer_id == first.customer_id
        assert {(i.type, i.value) for i in found.identifiers} == {
            ("email", "ada@example.com"),
            ("anonymous_id", "dev-1"),
            ("anonymous_id", "dev-2"),
        }
        assert {r.source for r in found.records} == {"web", "api"}

        batch = await identity.BatchLookup(
            identity_pb2.BatchLookupRequest(
                identifiers=[
                    ident("anonymous_id", "dev-2"),
                    ident("user_id", "nobody"),
                    ident("phone", "123"),
                ]
            )
        )
        assert [r.customer_id for r in batch.results] == [first.customer_id, "", ""]
        assert [bool(r.error) for r in batch.results] == [False, False, True]

        old = await identity.GetIdentities(
            identity_pb2.GetIdentitiesRequest(customer_id=second.customer_id)
        )
        assert old.customer_id == first.customer_id  # a merged id answers with its survivor
        history = await identity.GetMergeHistory(
            identity_pb2.GetMergeHistoryRequest(customer_id=first.customer_id)
        )
        assert [
            (m.survivor_id, list(m.merged_ids), m.caused_by_event_id) for m in history.merges
        ] == [(first.customer_id, [second.customer_id], "e3")]

        erased = await identity.Erase(identity_pb2.EraseRequest(customer_id=first.customer_id))
        assert erased.identifiers_removed == 3
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await identity.GetIdentities(
                identity_pb2.GetIdentitiesRequest(customer_id=first.customer_id)
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()


async def test_get_profile(servers: Servers) -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    await servers.profile.apply(
        [ProfileDelta("e1", "cust-1", {"name": "Ada"}, {"Signed Up": 2}, at)]
    )
    async with grpc.aio.insecure_channel(servers.target) as channel:
        profile = await profile_pb2_grpc.ProfileServiceStub(channel).GetProfile(
            profile_pb2.GetProfileRequest(customer_id="cust-1"), timeout=2
        )
    assert dict(profile.event_counts) == {"Signed Up": 2}
    assert profile.traits["name"] == "Ada"
    assert profile.first_seen.ToDatetime(UTC) == at


@pytest.mark.parametrize(
    ("identifier", "code", "detail"),
    [
        (ident("shoe_size", "42"), "INVALID_ARGUMENT", "shoe_size"),
        (ident("email", "no-at-sign"), "INVALID_ARGUMENT", "not a valid address"),
        (ident("phone", "12"), "INVALID_ARGUMENT", "phone"),
        (ident("user_id", "nobody"), "NOT_FOUND", "user_id"),
    ],
)
async def test_lookup_errors_name_the_problem(
    servers: Servers, identifier: common_pb2.Identifier, code: str, detail: str
) -> None:
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Lookup(identity_pb2.LookupRequest(identifier=identifier), timeout=2)
    assert error.value.code().name == code
    assert detail in (error.value.details() or "")


async def test_resolve_without_usable_identifiers_is_invalid_argument(servers: Servers) -> None:
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Resolve(
                identity_pb2.ResolveRequest(identifiers=[ident("anonymous_id", "undefined")]),
                timeout=2,
            )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "blocked" in (error.value.details() or "")


async def test_unexpected_errors_become_internal_without_a_trace(servers: Servers) -> None:
    async def broken(customer_id: str) -> None:
        raise RuntimeError("secret internals")

    servers.profile.get = broken  # type: ignore[method-assign]
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetProfile(profile_pb2.GetProfileRequest(customer_id="x"), timeout=2)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    details = error.value.details() or ""
    assert "internal error (ref " in details
    assert "secret" not in details


async def test_calls_without_deadline_get_the_default(servers: Servers) -> None:
    import asyncio

    async def slow(customer_id: str) -> None:
        await asyncio.sleep(30)

    servers.profile.get = slow  # type: ignore[method-assign]
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetProfile(profile_pb2.GetProfileRequest(customer_id="x"))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_channel_retries_unavailable(servers: Servers) -> None:
    from services.platform.errors import Unavailable
    from services.profile.store import StoredProfile

    calls = 0

    async def flaky(customer_id: str) -> StoredProfile:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Unavailable("warming up")
        return StoredProfile({"_id": customer_id, "event_counts": {"Ok": 1}}, None)

    servers.profile.get = flaky  # type: ignore[method-assign]
    channel = client_channel(servers.target, timeout_s=5)
    try:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        reply = await stub.GetProfile(profile_pb2.GetProfileRequest(customer_id="c"))
    finally:
        await channel.close()
    assert dict(reply.event_counts) == {"Ok": 1}
    assert calls == 3


async def test_client_channel_applies_its_default_timeout(servers: Servers) -> None:
    import asyncio

    async def slow(customer_id: str) -> None:
        await asyncio.sleep(30)

    servers.profile.get = slow  # type: ignore[method-assign]
    channel = client_channel(servers.target, timeout_s=0.3)
    try:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetProfile(profile_pb2.GetProfileRequest(customer_id="x"))
    finally:
        await channel.close()
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server's own default would say "took longer than 2.00s": the client's 0.3 s
    # deadline travelled with the call and ended it first.
    assert "2.00s" not in (error.value.details() or "")


async def test_set_consent_records_the_decision_and_rejects_unknown_purposes(
    servers: Servers,
) -> None:
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        reply = await stub.SetConsent(
            profile_pb2.SetConsentRequest(
                customer_id="cust-c", purpose="sms_marketing", state="denied", source="crm"
            ),
            timeout=5,
        )
        assert [(c.purpose, c.state, c.source) for c in reply.consent] == [
            ("sms_marketing", "denied", "crm")
        ]
        assert len(reply.consent_history) == 1
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.SetConsent(
                profile_pb2.SetConsentRequest(
                    customer_id="cust-c", purpose="telepathy", state="granted"
                ),
                timeout=5,
            )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "telepathy" in (error.value.details() or "")


async def test_list_timeline_pages_up_to_the_cap(servers: Servers) -> None:
    from services.profile.fold import ResolvedEvent
    from services.profile.timeline import TimelineSettings

    servers.profile.timeline_settings = TimelineSettings(cap=5)
    start = datetime(2026, 4, 1, tzinfo=UTC)
    await servers.profile.record(
        [
            ResolvedEvent(f"ev{n}", "cust-t", "track", "Viewed", start.replace(minute=n))
            for n in range(8)
        ]
    )
    async with grpc.aio.insecure_channel(servers.target) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        seen: list[str] = []
        token = ""
        while True:
            page = await stub.ListTimeline(
                profile_pb2.ListTimelineRequest(
                    customer_id="cust-t", page_size=2, page_token=token
                ),
                timeout=5,
            )
            seen += [e.event_id for e in page.entries]
            token = page.next_page_token
            if not token:
                break
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.ListTimeline(
                profile_pb2.ListTimelineRequest(customer_id="cust-t", page_token="garbage"),
                timeout=5,
            )
    assert seen == ["ev7", "ev6", "ev5", "ev4", "ev3"]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
