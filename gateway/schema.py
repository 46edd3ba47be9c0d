"""The GraphQL schema: the 360-degree customer view, stitched from the services over gRPC."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal, cast

import grpc
import strawberry
from google.protobuf.json_format import MessageToDict
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, Info

from gateway.admin import AdminMutation, AdminQuery
from gateway.devmode import dev_mode_only, schema_config
from gateway.error_log import log_errors
from gateway.errors import BAD_USER_INPUT, MaskUnexpectedErrors, client_error, from_rpc_error
from gateway.groups import Group, customer_groups
from gateway.limits import document_limits
from gateway.loaders import Loaders
from gateway.privacy import Mutation, PrivacyRequest, privacy_request
from gateway.recommendations import Recommendations, customer_recommendations
from gateway.segments import (
    CustomerScores,
    Segment,
    SegmentMembership,
    customer_scores,
    customer_segments,
    segments,
)
from gateway.settings import GatewaySettings
from gateway.wallet import WalletPass, customer_wallet_passes
from lodestar.v1 import common_pb2, profile_pb2
from services.platform.timestamps import field_time

# The largest timeline page the profile service serves.
MAX_TIMELINE_PAGE = 200


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


@strawberry.type(description="An amount of money.")
class Money:
    currency: str
    amount: float = strawberry.field(description="In currency units (minor units / 100).")

    @staticmethod
    def of(money: common_pb2.Money) -> Money:
        return Money(currency=money.currency, amount=money.amount_minor / 100)


@strawberry.type(description="What the customer's orders add up to, net of refunds.")
class OrdersSummary:
    order_count: int
    revenue: list[Money]
    average_order_value: Money
    first_order_at: datetime | None
    last_order_at: datetime | None


@strawberry.type(description="Loyalty points, cashback and tier.")
class Loyalty:
    points: int
    points_redeemed: int
    cashback_balance: Money
    tier: str
    tier_since: datetime | None
    spend_last_12_months: Money
    purchases_last_12_months: int = strawberry.field(
        description="Orders in the last 12 months not wholly refunded."
    )


@strawberry.type(description="A consent decision for one purpose.")
class Consent:
    purpose: str
    state: str = strawberry.field(description="granted or denied")
    source: str
    at: datetime | None

    @staticmethod
    def of(message: profile_pb2.ConsentState) -> Consent:
        return Consent(
            purpose=message.purpose,
            state=message.state,
            source=message.source,
            at=field_time(message, "at"),
        )


@strawberry.type(description="Channels and sources the customer used, and where they were last.")
class Behaviour:
    devices: list[str]
    cart_open: bool = strawberry.field(description="Products added since the last order.")
    cart_updated_at: datetime | None
    channels: list[str]
    sources: list[str]
    last_page: str | None
    last_page_at: datetime | None
    last_screen: str | None
    last_screen_at: datetime | None
    session_count: int = strawberry.field(
        description="Runs of activity with no gap longer than the session timeout."
    )
    last_session_started_at: datetime | None
    last_active_at: datetime | None


@strawberry.type(description="How often, and when last, the customer engaged in one way.")
class EngagementStat:
    kind: str
    count: int
    last_at: datetime | None


@strawberry.type(description="One event in the customer's timeline.")
class TimelineEntry:
    event_id: str
    type: str
    name: str
    at: datetime | None
    source: str
    properties: JSON
    traits: JSON


@strawberry.type(description="A page of the timeline, newest first.")
class TimelinePage:
    entries: list[TimelineEntry]
    next_page_token: str | None


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

    @strawberry.field(description="Orders summary (count, revenue, average order value).")
    async def orders(self, info: Info) -> OrdersSummary | None:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        if profile is None:
            return None
        orders = profile.orders
        return OrdersSummary(
            order_count=orders.order_count,
            revenue=[Money.of(m) for m in orders.revenue],
            average_order_value=Money.of(orders.average_order_value),
            first_order_at=field_time(orders, "first_order_at"),
            last_order_at=field_time(orders, "last_order_at"),
        )

    @strawberry.field(description="Loyalty points, cashback balance and tier.")
    async def loyalty(self, info: Info) -> Loyalty | None:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        if profile is None:
            return None
        status = profile.loyalty
        return Loyalty(
            points=status.points,
            points_redeemed=status.points_redeemed,
            cashback_balance=Money.of(status.cashback_balance),
            tier=status.tier,
            tier_since=field_time(status, "tier_since"),
            spend_last_12_months=Money.of(status.spend_last_12_months),
            purchases_last_12_months=status.purchases_last_12_months,
        )

    @strawberry.field(description="The current consent decision per purpose.")
    async def consent(self, info: Info) -> list[Consent]:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        return [] if profile is None else [Consent.of(c) for c in profile.consent]

    @strawberry.field(description="Every consent decision, oldest first.")
    async def consent_history(self, info: Info) -> list[Consent]:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        return [] if profile is None else [Consent.of(c) for c in profile.consent_history]

    @strawberry.field(description="Channels, sources, last page and screen.")
    async def behaviour(self, info: Info) -> Behaviour | None:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        if profile is None:
            return None
        b = profile.behaviour
        return Behaviour(
            devices=list(b.devices),
            cart_open=b.cart_open,
            cart_updated_at=field_time(b, "cart_updated_at"),
            channels=list(b.channels),
            sources=list(b.sources),
            last_page=b.last_page or None,
            last_page_at=field_time(b, "last_page_at"),
            last_screen=b.last_screen or None,
            last_screen_at=field_time(b, "last_screen_at"),
            session_count=b.session_count,
            last_session_started_at=field_time(b, "last_session_started_at"),
            last_active_at=field_time(b, "last_active_at"),
        )

    @strawberry.field(description="E-mail, push and wallet engagement.")
    async def engagement(self, info: Info) -> list[EngagementStat]:
        profile = await info.context["loaders"].profiles.load(str(self.id))
        if profile is None:
            return []
        return [
            EngagementStat(kind=e.kind, count=e.count, last_at=field_time(e, "last_at"))
            for e in profile.engagement
        ]

    @strawberry.field(description="Recent events, newest first; pass nextPageToken as after.")
    async def timeline(self, info: Info, first: int = 20, after: str | None = None) -> TimelinePage:
        if not 1 <= first <= MAX_TIMELINE_PAGE:
            raise client_error(f"first must be between 1 and {MAX_TIMELINE_PAGE}", BAD_USER_INPUT)
        request = profile_pb2.ListTimelineRequest(
            customer_id=str(self.id), page_size=first, page_token=after or ""
        )
        try:
            page = await info.context["clients"].profile.ListTimeline(request)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return TimelinePage(
            entries=[
                TimelineEntry(
                    event_id=e.event_id,
                    type=e.type,
                    name=e.name,
                    at=field_time(e, "at"),
                    source=e.source,
                    properties=cast(JSON, MessageToDict(e.properties)),
                    traits=cast(JSON, MessageToDict(e.traits)),
                )
                for e in page.entries
            ],
            next_page_token=page.next_page_token or None,
        )

    @strawberry.field(description="The segments the customer is in.")
    async def segments(self, info: Info) -> list[SegmentMembership]:
        return await customer_segments(info, str(self.id))

    @strawberry.field(description="RFM, churn risk and lifetime value; null before scoring.")
    async def scores(self, info: Info) -> CustomerScores | None:
        return await customer_scores(info, str(self.id))

    @strawberry.field(
        description="Products for this customer (not yet ordered), and the strategy that chose "
        "them."
    )
    async def recommendations(self, info: Info, n: int = 10) -> Recommendations:
        return await customer_recommendations(info, str(self.id), n)

    @strawberry.field(
        description="The customer's Apple and Google Wallet passes, oldest first, voided ones "
        "included."
    )
    async def wallet_passes(self, info: Info) -> list[WalletPass]:
        return await customer_wallet_passes(info, str(self.id))

    @strawberry.field(description="The groups (accounts) the customer belongs to, by id.")
    async def groups(self, info: Info) -> list[Group]:
        return await customer_groups(info, str(self.id))

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

    segments: list[Segment] = strawberry.field(
        resolver=segments, description="Every segment, with its size and status."
    )
    privacy_request: PrivacyRequest | None = strawberry.field(
        resolver=privacy_request, description="A privacy request by id; null when unknown."
    )


class LodestarSchema(strawberry.Schema):
    """The schema, logging failed operations without their source or variables."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log by code and path (Strawberry's own logging prints the query source)."""
        log_errors(errors, execution_context)


def build_schema(settings: GatewaySettings) -> strawberry.Schema:
    """The schema with the request limits of ``settings``."""
    return LodestarSchema(
        query=merge_types("Query", (Query, AdminQuery)),
        mutation=merge_types("Mutation", (Mutation, AdminMutation)),
        extensions=[*document_limits(settings), *dev_mode_only(settings), MaskUnexpectedErrors],
        config=schema_config(settings),
    )
