"""gRPC clients of the services the gateway reads from."""

from __future__ import annotations

import grpc

from gateway.settings import GatewaySettings
from lodestar.v1 import identity_pb2_grpc, profile_pb2_grpc
from services.platform.rpc import client_channel


class ServiceClients:
    """One channel per service, opened at start-up and shared by every request."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._channels: list[grpc.aio.Channel] = []
        self.identity = identity_pb2_grpc.IdentityServiceStub(
            self._open(settings.identity_addr, settings.grpc_timeout_s)
        )
        self.profile = profile_pb2_grpc.ProfileServiceStub(
            self._open(settings.profile_addr, settings.grpc_timeout_s)
        )

    def _open(self, target: str, timeout_s: float) -> grpc.aio.Channel:
        channel = client_channel(target, timeout_s)
        self._channels.append(channel)
        return channel

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels:
            await channel.close()
