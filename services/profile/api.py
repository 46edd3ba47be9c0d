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


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    """Serves profiles."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store

    async def GetProfile(
        self, request: profile_pb2.GetProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.Profile:
        """The profile of ``request.customer_id``; NOT_FOUND before its first event."""
        if not request.customer_id:
            raise InvalidArgument("customer_id is required")
        profile = await self.store.get(request.customer_id)
        if profile is None:
            raise NotFound(f"customer {request.customer_id!r} has no profile")
        return to_proto(profile)
