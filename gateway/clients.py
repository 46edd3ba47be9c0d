"""gRPC clients of the services the gateway reads from."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.settings import GatewaySettings
from lodestar.v1 import (
    identity_pb2_grpc,
    privacy_pb2_grpc,
    profile_pb2_grpc,
    recommendation_pb2_grpc,
    segmentation_pb2_grpc,
    wallet_pb2_grpc,
)
from services.platform.errors import Unavailable
from services.platform.rpc import client_channel

# The services the gateway reads from, by the names their health is reported under.
SERVICES = ("identity", "profile", "segmentation", "recommendation", "wallet")


class ServiceClients:
    """One channel per service, shared by every request.

    Channels are opened in :meth:`open`, inside the server's event loop: a ``grpc.aio``
    channel belongs to the loop it was created in.
    """

    identity: identity_pb2_grpc.IdentityServiceAsyncStub
    profile: profile_pb2_grpc.ProfileServiceAsyncStub
    # Privacy requests are served by the profile process.
    privacy: privacy_pb2_grpc.PrivacyServiceAsyncStub
    segmentation: segmentation_pb2_grpc.SegmentationServiceAsyncStub
    recommendation: recommendation_pb2_grpc.RecommendationServiceAsyncStub
    wallet: wallet_pb2_grpc.WalletServiceAsyncStub

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._channels: list[grpc.aio.Channel] = []
        self._health: dict[str, grpc.aio.Channel] = {}

    async def open(self) -> None:
        """Create the channels and stubs."""
        self.identity = identity_pb2_grpc.IdentityServiceStub(
            self._open(self.settings.identity_addr)
        )
        profile = self._open(self.settings.profile_addr)
        self.profile = profile_pb2_grpc.ProfileServiceStub(profile)
        self.privacy = privacy_pb2_grpc.PrivacyServiceStub(profile)
        self.segmentation = segmentation_pb2_grpc.SegmentationServiceStub(
            self._open(self.settings.segmentation_addr)
        )
        self.recommendation = recommendation_pb2_grpc.RecommendationServiceStub(
            self._open(self.settings.recommendation_addr)
        )
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self._open(self.settings.wallet_addr))
        targets = (
            self.settings.identity_addr,
            self.settings.profile_addr,
            self.settings.segmentation_addr,
            self.settings.recommendation_addr,
            self.settings.wallet_addr,
        )
        # Health checks go on channels of their own, with their own connections: checks
        # every few seconds against a dead service would otherwise push the shared
        # connection's reconnect backoff up, and the service's calls would keep failing
        # for a while after it is back.
        self._health = {
            service: grpc.aio.insecure_channel(
                target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for service, target in zip(SERVICES, targets, strict=True)
        }

    async def ready(self, service: str, timeout_s: float = 1.0) -> None:
        """Raise :class:`Unavailable` unless ``service`` says it is ready (gRPC health)."""
        channel = self._health.get(service)
        if channel is None:
            raise Unavailable(f"{service}: no channel open")
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout_s
        )
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable(f"{service} is not ready")

    def _open(self, target: str) -> grpc.aio.Channel:
        channel = client_channel(
            target, self.settings.grpc_timeout_s, self.settings.grpc_token_value()
        )
        self._channels.append(channel)
        return channel

    async def close(self) -> None:
        """Close every channel."""
        for channel in [*self._channels, *self._health.values()]:
            await channel.close()
        self._channels.clear()
        self._health.clear()
