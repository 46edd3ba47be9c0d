"""Groups (accounts: a company, a household) in GraphQL: ``customer { groups }``, batched
into one profile-service call per query by the ``groups`` DataLoader."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from google.protobuf.json_format import MessageToDict
from strawberry.scalars import JSON
from strawberry.types import Info

from lodestar.v1 import profile_pb2
from services.platform.timestamps import field_time


@strawberry.type(description="An account the customer belongs to, from group calls.")
class Group:
    id: strawberry.ID
    traits: JSON = strawberry.field(
        description="The group's traits (last-write-wins by event time), as a JSON object."
    )
    member_count: int = strawberry.field(description="Customers linked to the group.")
    created_at: datetime | None = strawberry.field(description="The first group call's time.")
    updated_at: datetime | None = strawberry.field(description="The latest group call's time.")

    @staticmethod
    def of(found: profile_pb2.Group) -> Group:
        """The GraphQL face of a stored group."""
        return Group(
            id=strawberry.ID(found.id),
            traits=cast(JSON, MessageToDict(found.traits)),
            member_count=found.member_count,
            created_at=field_time(found, "created_at"),
            updated_at=field_time(found, "updated_at"),
        )


async def customer_groups(info: Info, customer_id: str) -> list[Group]:
    """The customer's groups by id (batched across the query)."""
    found = await info.context["loaders"].groups.load(customer_id)
    return [Group.of(g) for g in found]
