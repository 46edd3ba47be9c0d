"""The GraphQL schema: the 360-degree customer view, stitched from the services over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast

import grpc
import strawberry
from graphql import GraphQLError
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, ExecutionResult, Info
from strawberry.types.graphql import OperationType

from gateway.admin import AdminMutation, AdminQuery
from gateway.consent import Consent
from gateway.devmode import dev_mode_only, schema_config
from gateway.error_log import log_errors
from gateway.errors import MaskUnexpectedErrors, from_rpc_error
from gateway.groups import MAX_GROUP_PAGE, Group, customer_groups
from gateway.items import Item, item
from gateway.limits import document_limits
from gateway.loaders import Loaders, TimelineKey
from gateway.masking import masked_identifier, masked_traits
from gateway.mutations import Mutation
from gateway.privacy import PrivacyRequest, privacy_request
from gateway.recommendations import Recommendations, customer_recommendations
from gateway.relay import Connection, Edge, PageInfo, check_first, connection
from gateway.scopes import Scope, needs
from gateway.segments import (
    CustomerScores,
    Segment,
    SegmentMembership,
    customer_scores,
    customer_segments,
    segment,
    segments,
)
from gateway.settings import GatewaySettings
from gateway.spans import graphql_spans
from gateway.structs import struct_dict
from gateway.subscriptions import Subscription
from gateway.wallet import WalletPass, customer_wallet_passes, wallet_pass
from lodestar.v1 import common_pb2, identity_pb2, profile_pb2, segmentation_pb2
from services.platform.timestamps import field_time
from services.profile.commerce import ORDER_COMPLETED, ORDER_REFUNDED, order_amount

R = TypeVar("R")
V = TypeVar("V")

# The largest timeline page the profile service serves.
MAX_TIMELINE_PAGE = 200
# The largest page of a segment's customers (each one a full customer view).
MAX_CUSTOMERS_PAGE = 100
# The events an order list is made of.
ORDER_EVENTS = (ORDER_COMPLETED, ORDER_REFUNDED)


@strawberry.type(description="One way of recognising a customer, e.g. email or user_id.")
class Identifier:
    type: str
    value: str


@strawberry.input(description="One of a customer's identifiers.")
class IdentifierInput:
    type: str = strawberry.field(
        description="user_id, email, phone, loyalty_number, device_id, wallet_serial, "
        "anonymous_id, or a custom type configured in the identity service"
    )
    value: str


@strawberry.input(
    one_of=True, description="How to find a customer: exactly one of id or identifier."
)
class CustomerLookup:
    id: strawberry.ID | None = strawberry.UNSET
    identifier: IdentifierInput | None = strawberry.UNSET


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
    properties: JSON = strawberry.field(description="PII values masked without read:pii.")
    traits: JSON = strawberry.field(description="PII values masked without read:pii.")

    @staticmethod
    def of(info: Info, entry: profile_pb2.TimelineEntry) -> TimelineEntry:
        """An entry as this request may see it."""
        return TimelineEntry(
            event_id=entry.event_id,
            type=entry.type,
            name=entry.name,
            at=field_time(entry, "at"),
            source=entry.source,
            properties=cast(JSON, masked_traits(info, struct_dict(entry.properties))),
            traits=cast(JSON, masked_traits(info, struct_dict(entry.traits))),
        )


@strawberry.type(description="An order, or a refund of one, from the customer's events.")
class Order:
    event_id: str
    kind: str = strawberry.field(description="Order Completed or Order Refunded")
    order_id: str | None
    total: Money | None = strawberry.field(
        description="total, else revenue, else the products' prices (a refund's amount); null "
        "when the event carried none."
    )
    products: JSON = strawberry.field(description="The event's products, as sent.")
    at: datetime | None

    @staticmethod
    def of(entry: profile_pb2.TimelineEntry) -> Order:
        """The order an Order Completed or Order Refunded event tells."""
        properties = struct_dict(entry.properties)
        amount = order_amount(properties)
        currency = str(properties.get("currency") or "").upper()
        order_id = properties.get("order_id") or properties.get("orderId")
        products = properties.get("products")
        return Order(
            event_id=entry.event_id,
            kind=entry.name,
            order_id=None if order_id is None else str(order_id),
            total=None if amount is None else Money(currency=currency, amount=amount / 100),
            products=cast(JSON, products if isinstance(products, list) else []),
            at=field_time(entry, "at"),
        )


async def _timeline_page(
    info: Info, customer_id: str, first: int, after: str | None, names: tuple[str, ...]
) -> profile_pb2.ListTimelineResponse:
    check_first(first, MAX_TIMELINE_PAGE)
    loaders: Loaders = info.context["loaders"]
    return await loaders.timelines.load(TimelineKey(customer_id, first, after or "", names))


def _at_once_or_later(loader: DataLoader[str, V], key: str, then: Callable[[V], R]) -> R:
    """``then`` of what ``loader`` gives for ``key``: at once when the request loaded it
    already (the root lookup loads the profile and identities), else once it is loaded.

    A resolver may return a value or an awaitable; each field awaiting a loaded profile cost
    an awaitable through graphql-core, ten per customer. A failed load raises its error in
    this field either way (``Future.result`` re-raises it)."""
    future = loader.cache_map.get(key)
    if future is not None and future.done():
        return then(future.result())

    async def later() -> R:
        return then(await loader.load(key))

    # graphql-core awaits what a resolver returns when it is awaitable.
    return cast(R, later())


def _orders(profile: profile_pb2.Profile | None) -> OrdersSummary | None:
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


def _loyalty(profile: profile_pb2.Profile | None) -> Loyalty | None:
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


def _behaviour(profile: profile_pb2.Profile | None) -> Behaviour | None:
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


def _engagement(profile: profile_pb2.Profile | None) -> list[EngagementStat]:
    if profile is None:
        return []
    return [
        EngagementStat(kind=e.kind, count=e.count, last_at=field_time(e, "last_at"))
        for e in profile.engagement
    ]


@strawberry.type(description="The 360-degree view of one customer.")
class Customer:
    id: strawberry.ID

    def _profile(self, info: Info, then: Callable[[profile_pb2.Profile | None], R]) -> R:
        loaders: Loaders = info.context["loaders"]
        return _at_once_or_later(loaders.profiles, str(self.id), then)

    @strawberry.field(
        description="Every identifier linked to this customer; e-mail and phone values masked "
        "without read:pii."
    )
    def identifiers(self, info: Info) -> list[Identifier] | None:
        def shown(found: identity_pb2.CustomerIdentities | None) -> list[Identifier]:
            if found is None:
                return []
            return [
                Identifier(type=i.type, value=masked_identifier(info, i.type, i.value))
                for i in found.identifiers
            ]

        loaders: Loaders = info.context["loaders"]
        return _at_once_or_later(loaders.identities, str(self.id), shown)

    @strawberry.field(
        description="Traits from identify calls, as a JSON object; PII values masked without "
        "read:pii."
    )
    def traits(self, info: Info) -> JSON | None:
        return self._profile(
            info,
            lambda p: cast(JSON, {} if p is None else masked_traits(info, struct_dict(p.traits))),
        )

    @strawberry.field(description="Track events performed, by event name.")
    def event_counts(self, info: Info) -> list[EventCount] | None:
        return self._profile(
            info,
            lambda p: (
                []
                if p is None
                else [EventCount(name=n, count=c) for n, c in sorted(p.event_counts.items())]
            ),
        )

    @strawberry.field(
        description="Orders summary (count, revenue, average order value); the orders "
        "themselves are orderHistory."
    )
    def orders(self, info: Info) -> OrdersSummary | None:
        return self._profile(info, _orders)

    @strawberry.field(description="Loyalty points, cashback balance and tier.")
    def loyalty(self, info: Info) -> Loyalty | None:
        return self._profile(info, _loyalty)

    @strawberry.field(description="The current consent decision per purpose.")
    def consent(self, info: Info) -> list[Consent] | None:
        return self._profile(
            info, lambda p: [] if p is None else [Consent.of(c) for c in p.consent]
        )

    @strawberry.field(description="Every consent decision, oldest first.")
    def consent_history(self, info: Info) -> list[Consent] | None:
        return self._profile(
            info, lambda p: [] if p is None else [Consent.of(c) for c in p.consent_history]
        )

    @strawberry.field(description="Channels, sources, last page and screen.")
    def behaviour(self, info: Info) -> Behaviour | None:
        return self._profile(info, _behaviour)

    @strawberry.field(description="E-mail, push and wallet engagement.")
    def engagement(self, info: Info) -> list[EngagementStat] | None:
        return self._profile(info, _engagement)

    @strawberry.field(
        description=f"Recent events, newest first (first: 1..{MAX_TIMELINE_PAGE}); pass "
        "pageInfo.endCursor as after for the next page."
    )
    async def timeline(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> Connection[TimelineEntry] | None:
        page = await _timeline_page(info, str(self.id), first, after, ())
        return connection(
            [Edge(cursor=e.cursor, node=TimelineEntry.of(info, e)) for e in page.entries],
            page.next_page_token,
            after,
        )

    @strawberry.field(
        description="The customer's orders and refunds (Order Completed and Order Refunded "
        f"events), newest first (first: 1..{MAX_TIMELINE_PAGE}); orders is their summary."
    )
    async def order_history(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> Connection[Order] | None:
        page = await _timeline_page(info, str(self.id), first, after, ORDER_EVENTS)
        return connection(
            [Edge(cursor=e.cursor, node=Order.of(e)) for e in page.entries],
            page.next_page_token,
            after,
        )

    @strawberry.field(description="The segments the customer is in.")
    async def segments(self, info: Info) -> list[SegmentMembership] | None:
        return await customer_segments(info, str(self.id))

    @strawberry.field(description="RFM, churn risk and lifetime value; null before scoring.")
    async def scores(self, info: Info) -> CustomerScores | None:
        return await customer_scores(info, str(self.id))

    @strawberry.field(
        description="Products for this customer (not yet ordered), and the strategy that chose "
        "them."
    )
    async def recommendations(self, info: Info, n: int = 10) -> Recommendations | None:
        return await customer_recommendations(info, str(self.id), n)

    @strawberry.field(
        description="The customer's Apple and Google Wallet passes, oldest first, voided ones "
        "included."
    )
    async def wallet_passes(self, info: Info) -> list[WalletPass] | None:
        return await customer_wallet_passes(info, str(self.id))

    @strawberry.field(
        description=f"The groups (accounts) the customer belongs to, by id (first: "
        f"1..{MAX_GROUP_PAGE}); group traits' PII values masked without read:pii."
    )
    async def groups(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> Connection[Group] | None:
        return await customer_groups(info, str(self.id), first, after)

    @strawberry.field(description="When the first event of this customer happened.")
    def first_seen(self, info: Info) -> datetime | None:
        return self._profile(info, lambda p: _time(p, "first_seen"))

    @strawberry.field(description="When the latest event of this customer happened.")
    def last_seen(self, info: Info) -> datetime | None:
        return self._profile(info, lambda p: _time(p, "last_seen"))


@strawberry.type(description="A page of a segment's members, each the full customer view.")
class CustomerConnection:
    edges: list[Edge[Customer]]
    page_info: PageInfo
    total_count: int = strawberry.field(description="Members of the segment now.")


async def _load_views(loaders: Loaders, customer_ids: list[str]) -> None:
    """Load the customers' identities and profiles before their fields resolve, so the
    fields they feed answer at once (see :func:`_at_once_or_later`). A failed load stays in
    its loader and nulls only the fields it feeds, each with its error."""
    await asyncio.gather(
        loaders.identities.load_many(customer_ids),
        loaders.profiles.load_many(customer_ids),
        return_exceptions=True,
    )


async def _lookup(info: Info, by: CustomerLookup) -> Customer | None:
    loaders: Loaders = info.context["loaders"]
    if by.identifier:
        found = await loaders.customer_ids.load((by.identifier.type, by.identifier.value))
        if found is None:
            return None
        await _load_views(loaders, [found])
        return Customer(id=strawberry.ID(found))
    customer_id = str(by.id)
    # Either service alone tells the customer exists; the fields of one that is down are
    # null with their own error.
    identities, profile = await asyncio.gather(
        loaders.identities.load(customer_id),
        loaders.profiles.load(customer_id),
        return_exceptions=True,
    )
    if isinstance(identities, identity_pb2.CustomerIdentities):
        # A merged customer's id answers with its survivor.
        return Customer(id=strawberry.ID(identities.customer_id))
    if isinstance(profile, profile_pb2.Profile):
        return Customer(id=strawberry.ID(profile.customer_id or customer_id))
    for outcome in (identities, profile):
        if isinstance(outcome, BaseException):
            raise outcome
    return None


@strawberry.type
class Query:
    @strawberry.field(
        description="A customer by id or by one identifier; null when unknown.",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    async def customer(self, info: Info, by: CustomerLookup) -> Customer | None:
        return await _lookup(info, by)

    @strawberry.field(
        description=f"A segment's members in customer id order (first: "
        f"1..{MAX_CUSTOMERS_PAGE}), each the full customer view; null for an unknown segment.",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    async def customers(
        self, info: Info, segment: strawberry.ID, first: int = 20, after: str | None = None
    ) -> CustomerConnection | None:
        check_first(first, MAX_CUSTOMERS_PAGE)
        request = segmentation_pb2.MembersRequest(
            segment_id=str(segment), page_size=first, page_token=after or ""
        )
        try:
            page = await info.context["clients"].segmentation.Members(request)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise from_rpc_error(error) from error
        edges = [
            Edge(cursor=m.cursor, node=Customer(id=strawberry.ID(m.customer_id)))
            for m in page.members
        ]
        await _load_views(info.context["loaders"], [m.customer_id for m in page.members])
        found = connection(edges, page.next_page_token, after)
        return CustomerConnection(
            edges=found.edges, page_info=found.page_info, total_count=page.total
        )

    segment: Segment | None = strawberry.field(
        resolver=segment,
        description="A segment by id; null when unknown.",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    segments: list[Segment] = strawberry.field(
        resolver=segments,
        description="Every segment, with its size and status.",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    item: Item | None = strawberry.field(
        resolver=item,
        description="A catalog item by id, with similar and bought-together items; null when "
        "unknown.",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    wallet_pass: WalletPass | None = strawberry.field(
        resolver=wallet_pass,
        description="A wallet pass by serial number; null when unknown.",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    privacy_request: PrivacyRequest | None = strawberry.field(
        resolver=privacy_request,
        description="A privacy request by id; null when unknown.",
        permission_classes=[needs(Scope.PRIVACY)],
    )


class LodestarSchema(strawberry.Schema):
    """The schema, logging failed operations without their source or variables."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log by code and path (Strawberry's own logging prints the query source)."""
        log_errors(errors, execution_context)

    async def execute(  # noqa: PLR0917
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Subscriptions stream over WebSocket only (``stream``); over plain HTTP they are
        refused (400) instead of running as a query that cannot answer."""
        given = OperationType if allowed_operation_types is None else allowed_operation_types
        allowed = set(given) - {OperationType.SUBSCRIPTION}
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed,
            operation_extensions,
        )


def build_schema(settings: GatewaySettings) -> strawberry.Schema:
    """The schema with the request limits of ``settings``."""
    return LodestarSchema(
        query=merge_types("Query", (Query, AdminQuery)),
        mutation=merge_types("Mutation", (Mutation, AdminMutation)),
        subscription=Subscription,
        extensions=[
            *graphql_spans(),
            *document_limits(settings),
            *dev_mode_only(settings),
            MaskUnexpectedErrors,
        ],
        config=schema_config(settings),
    )
