"""What a new pass needs from the other services: identity links its serial to the customer
(so events that carry only the serial, installed and removed, resolve to the customer), and
profile says the customer's loyalty figures now (a card shows them from the start)."""

from __future__ import annotations

import grpc

from lodestar.v1 import common_pb2, identity_pb2, identity_pb2_grpc, profile_pb2, profile_pb2_grpc
from services.platform.errors import NotFound, Unavailable
from services.wallet.records import LoyaltyFigures

# The customer's identifier the serial is linked through, most stable first.
PREFERENCE = ("user_id", "loyalty_number", "email", "phone", "anonymous_id", "device_id")


class IdentityLinker:
    """Resolves ``[<an identifier of the customer>, wallet_serial]`` through identity."""

    def __init__(self, stub: identity_pb2_grpc.IdentityServiceAsyncStub) -> None:
        self.stub = stub

    async def link(self, customer_id: str, serial_number: str) -> None:
        """NotFound when identity does not know the customer; Unavailable when it is down."""
        try:
            found = await self.stub.GetIdentities(
                identity_pb2.GetIdentitiesRequest(customer_id=customer_id)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"customer {customer_id!r} is not known to identity") from None
            raise Unavailable(f"identity: {exc.details()}") from None
        ranked = sorted(
            (i for i in found.identifiers if i.type in PREFERENCE),
            key=lambda i: PREFERENCE.index(i.type),
        )
        if not ranked:
            raise NotFound(f"customer {customer_id!r} has no identifier to link a pass to")
        try:
            await self.stub.Resolve(
                identity_pb2.ResolveRequest(
                    identifiers=[
                        common_pb2.Identifier(type=ranked[0].type, value=ranked[0].value),
                        common_pb2.Identifier(type="wallet_serial", value=serial_number),
                    ],
                    event_id=f"wallet-link-{serial_number}",
                    source="wallet",
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"identity: {exc.details()}") from None


class ProfileFigures:
    """The customer's loyalty figures from the profile service."""

    def __init__(self, stub: profile_pb2_grpc.ProfileServiceAsyncStub) -> None:
        self.stub = stub

    async def loyalty(self, customer_id: str) -> LoyaltyFigures:
        """Points, cashback and tier now; empty for a customer without a profile yet.
        Unavailable when the profile service is down."""
        try:
            profile = await self.stub.GetProfile(
                profile_pb2.GetProfileRequest(customer_id=customer_id)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return {}
            raise Unavailable(f"profile: {exc.details()}") from None
        figures: LoyaltyFigures = {
            "points": int(profile.loyalty.points),
            "cashback_minor": int(profile.loyalty.cashback_balance.amount_minor),
        }
        if profile.loyalty.tier:
            figures["tier"] = profile.loyalty.tier
        return figures
