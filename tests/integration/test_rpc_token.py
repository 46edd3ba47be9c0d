"""The services' gRPC door over a real channel: no call without the service token, except
health checks; the request of a refused call is never decoded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lodestar.v1 import profile_pb2, profile_pb2_grpc
from services.platform.rpc import GrpcServer, client_channel
from services.platform.rpcauth import blocking_channel

TOKEN = "t0ken-for-the-tests-0123456789"
NAME = "lodestar.v1.ProfileService"


class CountingProfiles(profile_pb2_grpc.ProfileServiceServicer):
    """Answers GetProfile with the id asked for, and counts what it decoded."""

    def __init__(self) -> None:
        self.calls = 0

    async def GetProfile(  # noqa: N802 - the generated servicer's name
        self, request: profile_pb2.GetProfileRequest, context: Any
    ) -> profile_pb2.Profile:
        self.calls += 1
        return profile_pb2.Profile(customer_id=request.customer_id)


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, CountingProfiles]]:
    servicer = CountingProfiles()  # type: ignore[abstract]  # only GetProfile is called
    server = GrpcServer(
        "127.0.0.1",
        0,
        [NAME],
        lambda s: profile_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, s),
        token=TOKEN,
    )
    await server.start()
    yield f"127.0.0.1:{server.port}", servicer
    await server.stop(0)


async def get(channel: grpc.aio.Channel, **kwargs: Any) -> profile_pb2.Profile:
    stub = profile_pb2_grpc.ProfileServiceStub(channel)
    reply: profile_pb2.Profile = await stub.GetProfile(
        profile_pb2.GetProfileRequest(customer_id="c-1"), timeout=5, **kwargs
    )
    return reply


async def test_a_call_without_the_token_is_refused_before_it_runs(
    served: tuple[str, CountingProfiles],
) -> None:
    target, servicer = served
    async with grpc.aio.insecure_channel(target) as channel:
        for metadata in ((), (("authorization", "Bearer wrong-token-0123456789"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await get(channel, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "LODESTAR_GRPC_TOKEN" in (refused.value.details() or "")
            assert TOKEN not in (refused.value.details() or "")
        # Reflection (a streaming service) is a door too.
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.ServerReflectionInfo(iter([request]), timeout=5):
                pass
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.calls == 0


async def test_health_answers_without_the_token(served: tuple[str, CountingProfiles]) -> None:
    target, _ = served
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=NAME), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_channels_made_with_the_token_are_let_in(
    served: tuple[str, CountingProfiles],
) -> None:
    target, servicer = served
    async with client_channel(target, token=TOKEN) as channel:
        assert (await get(channel)).customer_id == "c-1"

    def blocking_call() -> str:
        with blocking_channel(target, TOKEN) as blocking:
            stub = profile_pb2_grpc.ProfileServiceStub(blocking)
            request = profile_pb2.GetProfileRequest(customer_id="c-2")
            return str(stub.GetProfile(request, timeout=5).customer_id)

    # The blocking API waits in a thread, so this loop goes on serving.
    assert await asyncio.to_thread(blocking_call) == "c-2"
    assert servicer.calls == 2
