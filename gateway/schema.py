"""The GraphQL schema: the 360-degree customer view, stitched from the services over gRPC."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal, cast

import strawberry
from google.protobuf.json_format import MessageToDict
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.errors import BAD_USER_INPUT, MaskUnexpectedErrors, client_error
from gateway.loaders import Loaders
from lodestar.v1 import profile_pb2


@strawberry.type(description="One way of recognising a customer, e.g. email or user_id.")
class Identifier:
    type: str
    value: str


@strawberry.input(description="Find a customer by one of their identifiers.")
class IdentifierInput:
    type: str = strawberry.field(
        description="user_id, email, phone, loyalty_number, device_id, wallet_serial, "
        "anonymous_id, or a custom type configured in the identity service"
    )
    value: str


@strawberry.type(description="How often the customer performed one event.")
class EventCount:
    name: str
    count: int


def _time(
    profile: profile_pb2.Profile | None, name: Literal["first_seen", "last_seen"]
) -> datetime | None:
    if profile is None or not profile.HasField(name):
        return None
    return cast(datetime, getattr(profile, name).ToDatetime(UTC))


@strawberry.type(description="The 360-degree view of one customer.")
class Customer:
    id: strawberry.ID

    @strawberry.field(description="Every identifier linked to this customer.")
    async def identifiers(self, info: Info) -> list[Identifier]:
        loaders: Loaders = info.context["loaders"]
        found = await loaders.identities.load(str(self.id))
        return (
            []
            if found is None
            else [Identifier(type=i.type, value=i.value) for i in found.identifiers]
        )

    @strawberry.field(description="Traits from identify calls, as a JSON object.")
    async def traits(self, info: Info) -> JSON:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        return cast(JSON, {} if profile is None else MessageToDict(profile.traits))

    @strawberry.field(description="Track events performed, by event name.")
    async def event_counts(self, info: Info) -> list[EventCount]:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        if profile is None:
            return []
        return [EventCount(name=n, count=c) for n, c in sorted(profile.event_counts.items())]

    @strawberry.field(description="When the first event of this customer happened.")
    async def first_seen(self, info: Info) -> datetime | None:
        return _time(await info.context["loaders"].profiles.load(str(self.id)), "first_seen")

    @strawberry.field(description="When the latest event of this customer happened.")
    async def last_seen(self, info: Info) -> datetime | None:
        return _time(await info.context["loaders"].profiles.load(str(self.id)), "last_seen")


@strawberry.type
class Query:
    @strawberry.field(
        description="A customer by id or by identifier (exactly one); null when unknown."
    )
    async def customer(
        self,
        info: Info,
        id: strawberry.ID | None = None,
        identifier: IdentifierInput | None = None,
    ) -> Customer | None:
        if (id is None) == (identifier is None):
            raise client_error("pass exactly one of id or identifier", BAD_USER_INPUT)
        loaders: Loaders = info.context["loaders"]
        if identifier is not None:
            customer_id = await loaders.customer_ids.load((identifier.type, identifier.value))
            return None if customer_id is None else Customer(id=strawberry.ID(customer_id))
        identities, profile = await asyncio.gather(
            loaders.identities.load(str(id)), loaders.profiles.load(str(id))
        )
        if identities is None and profile is None:
            return None
        # A merged customer's id answers with its survivor.
        current = identities.customer_id if identities is not None else str(id)
        return Customer(id=strawberry.ID(current))


schema = strawberry.Schema(query=Query, extensions=[MaskUnexpectedErrors])
