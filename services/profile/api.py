"""gRPC servicer of the profile service."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import profile_pb2, profile_pb2_grpc
from services.platform.errors import InvalidArgument, NotFound
from services.profile.store import ProfileStore, StoredProfile


def to_proto(profile: StoredProfile) -> profile_pb2.Profile:
    """The wire form of a stored profile."""
    traits = Struct()
    traits.update(profile.traits)
    reply = profile_pb2.Profile(
        customer_id=profile.customer_id, traits=traits, event_counts=profile.event_counts
    )
    for name, when in (("first_seen", profile.first_seen), ("last_seen", profile.last_seen)):
        if when is not None:
            stamp = Timestamp()
            stamp.FromDatetime(when)
            getattr(reply, name).CopyFrom(stamp)
    return reply


MAX_BATCH = 1_000


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    """Serves profiles."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store

    async def BatchGetProfiles(
        self,
        request: profile_pb2.BatchGetProfilesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> profile_pb2.BatchGetProfilesResponse:
        """The profiles of many customers; unknown ids are left out."""
        if len(request.customer_ids) > MAX_BATCH:
            raise InvalidArgument(f"customer_ids: at most {MAX_BATCH} per call")
        found = await self.store.get_many(list(request.customer_ids))
        return profile_pb2.BatchGetProfilesResponse(
            profiles={asked: to_proto(profile) for asked, profile in found.items()}
        )

    async def Export(
        self, request: profile_pb2.ExportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.ExportResponse:
        """Everything the profile service holds about the customer."""
        profile = await self._profile(request.customer_id)
        data = Struct()
        data.update(profile.export())
        return profile_pb2.ExportResponse(customer_id=profile.customer_id, data=data)

    async def Erase(
        self,
        request: profile_pb2.EraseProfileRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> profile_pb2.EraseProfileResponse:
        """Delete the customer's profile (a no-op for an unknown customer)."""
        if not request.customer_id:
            raise InvalidArgument("customer_id is required")
        erased = await self.store.erase(request.customer_id)
        return profile_pb2.EraseProfileResponse(customer_id=request.customer_id, erased=erased)

    async def _profile(self, customer_id: str) -> StoredProfile:
        if not customer_id:
            raise InvalidArgument("customer_id is required")
        profile = await self.store.get(customer_id)
        if profile is None:
            raise NotFound(f"customer {customer_id!r} has no profile")
        return profile

    async def GetProfile(
        self, request: profile_pb2.GetProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.Profile:
        """The profile of ``request.customer_id``; NOT_FOUND before its first event."""
        return to_proto(await self._profile(request.customer_id))
