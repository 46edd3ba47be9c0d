"""GraphQL subscriptions (over graphql-transport-ws): a customer's profile changes, a
segment's entries and exits, a customer's passes installed, pushed and removed.

Each subscription watches one key of the process's :class:`gateway.live.LiveHub`; a
subscriber that falls behind ends with ``extensions.code`` ``SUBSCRIBER_TOO_SLOW``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from enum import Enum

import strawberry
from strawberry.types import Info

from gateway.errors import BAD_USER_INPUT, SERVICE_UNAVAILABLE, client_error
from gateway.live import (
    CustomerChange,
    FellBehind,
    LiveEvent,
    LiveHub,
    MembershipChange,
    PassChange,
    Watch,
)
from gateway.scopes import Scope, needs

# extensions.code of a subscription ended because its client did not keep up.
SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
# Longest id a subscription accepts (customer, segment ids are far shorter).
MAX_ID_CHARS = 128


@strawberry.type(description="Which profile fields of a customer changed, and when.")
class CustomerChanged:
    event_id: str
    customer_id: strawberry.ID
    changed_fields: list[str] = strawberry.field(
        description="Profile paths, e.g. traits.plan, event_counts.Order Completed, loyalty, "
        "orders, consent.email, behaviour.last_page."
    )
    at: datetime | None

    @staticmethod
    def of(event: CustomerChange) -> CustomerChanged:
        return CustomerChanged(
            event_id=event.event_id,
            customer_id=strawberry.ID(event.customer_id),
            changed_fields=list(event.changed_fields),
            at=event.at,
        )


@strawberry.enum(description="Whether the customer entered or exited the segment.")
class MembershipChangeKind(Enum):
    ENTERED = "ENTERED"
    EXITED = "EXITED"


@strawberry.type(description="A customer entered or exited a segment.")
class SegmentMembershipEvent:
    event_id: str
    segment_id: strawberry.ID
    customer_id: strawberry.ID
    change: MembershipChangeKind
    at: datetime | None

    @staticmethod
    def of(event: MembershipChange) -> SegmentMembershipEvent:
        return SegmentMembershipEvent(
            event_id=event.event_id,
            segment_id=strawberry.ID(event.segment_id),
            customer_id=strawberry.ID(event.customer_id),
            change=MembershipChangeKind.ENTERED if event.entered else MembershipChangeKind.EXITED,
            at=event.at,
        )


@strawberry.enum(description="What happened to a wallet pass.")
class PassEventKind(Enum):
    INSTALLED = "INSTALLED"
    PUSHED = "PUSHED"
    REMOVED = "REMOVED"


@strawberry.type(description="One of the customer's passes was installed, pushed or removed.")
class PassEvent:
    event_id: str
    customer_id: strawberry.ID
    serial_number: str
    platform: str = strawberry.field(description="APPLE or GOOGLE")
    kind: PassEventKind
    at: datetime | None

    @staticmethod
    def of(event: PassChange) -> PassEvent:
        return PassEvent(
            event_id=event.event_id,
            customer_id=strawberry.ID(event.customer_id),
            serial_number=event.serial_number,
            platform=event.platform,
            kind=PassEventKind(event.kind),
            at=event.at,
        )


def _hub(info: Info) -> LiveHub:
    hub = info.context.get("live")
    if not isinstance(hub, LiveHub):
        raise client_error("live updates are unavailable; retry shortly", SERVICE_UNAVAILABLE)
    return hub


def _checked_id(argument: str, value: str) -> str:
    """An id argument of 1 to MAX_ID_CHARS characters (the message never repeats it)."""
    if not value or len(value) > MAX_ID_CHARS:
        raise client_error(f"{argument} must be 1 to {MAX_ID_CHARS} characters", BAD_USER_INPUT)
    return value


async def _events(info: Info, what: Watch, id_: str) -> AsyncGenerator[LiveEvent, None]:
    """The events of ``(what, id_)`` until the client leaves or falls behind."""
    async with _hub(info).watch(what, id_) as subscriber:
        while True:
            try:
                event = await subscriber.next()
            except FellBehind as behind:
                raise client_error(str(behind), SUBSCRIBER_TOO_SLOW) from None
            yield event


@strawberry.type
class Subscription:
    @strawberry.field(
        is_subscription=True,
        description="The customer's profile changes as they happen (which fields, when).",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    async def customer_changed(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[CustomerChanged, None]:
        customer_id = _checked_id("id", str(id))
        async for event in _events(info, Watch.CUSTOMER, customer_id):
            assert isinstance(event, CustomerChange)
            yield CustomerChanged.of(event)

    @strawberry.field(
        is_subscription=True,
        description="Customers entering and exiting the segment as it happens.",
        permission_classes=[needs(Scope.READ_CUSTOMERS)],
    )
    async def segment_membership(
        self, info: Info, segment_id: strawberry.ID
    ) -> AsyncGenerator[SegmentMembershipEvent, None]:
        checked = _checked_id("segmentId", str(segment_id))
        async for event in _events(info, Watch.SEGMENT, checked):
            assert isinstance(event, MembershipChange)
            yield SegmentMembershipEvent.of(event)

    @strawberry.field(
        is_subscription=True,
        description="The customer's wallet passes installed, pushed (updated) and removed.",
        permission_classes=[needs(Scope.WALLET)],
    )
    async def pass_events(
        self, info: Info, customer_id: strawberry.ID
    ) -> AsyncGenerator[PassEvent, None]:
        checked = _checked_id("customerId", str(customer_id))
        async for event in _events(info, Watch.PASSES, checked):
            assert isinstance(event, PassChange)
            yield PassEvent.of(event)
