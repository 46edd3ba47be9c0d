"""Groups (accounts: a company, a household) in GraphQL: ``customer { groups }`` as a Relay
connection, batched into one profile-service call per query by the ``groups`` DataLoader."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.loaders import GroupsKey
from gateway.masking import masked_traits
from gateway.relay import Connection, Edge, check_first, connection
from gateway.structs import struct_dict
from lodestar.v1 import profile_pb2
from services.platform.timestamps import field_time

# The most groups per page (the profile service answers up to 1000).
MAX_GROUP_PAGE = 100


@strawberry.type(description="An account the customer belongs to, from group calls.")
class Group:
    id: strawberry.ID
    traits: JSON = strawberry.field(
        description="The group's traits (last-write-wins by event time), as a JSON object; PII "
        "values masked without read:pii."
    )
    member_count: int = strawberry.field(description="Customers linked to the group.")
    created_at: datetime | None = strawberry.field(description="The first group call's time.")
    updated_at: datetime | None = strawberry.field(description="The latest group call's time.")

    @staticmethod
    def of(info: Info, found: profile_pb2.Group) -> Group:
        """The GraphQL face of a stored group, as this request may see it."""
        return Group(
            id=strawberry.ID(found.id),
            traits=cast(JSON, masked_traits(info, struct_dict(found.traits))),
            member_count=found.member_count,
            created_at=field_time(found, "created_at"),
            updated_at=field_time(found, "updated_at"),
        )


async def customer_groups(
    info: Info, customer_id: str, first: int, after: str | None
) -> Connection[Group]:
    """A page of the customer's groups by id (batched across the query)."""
    check_first(first, MAX_GROUP_PAGE)
    found = await info.context["loaders"].groups.load(GroupsKey(customer_id, first, after or ""))
    edges = [
        Edge(cursor=cursor, node=Group.of(info, g))
        for g, cursor in zip(found.groups, found.cursors, strict=True)
    ]
    return connection(edges, found.next_page_token, after)
