"""gRPC servicer of the profile service."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct

from lodestar.v1 import (
    common_pb2,
    events_pb2,
    privacy_pb2,
    privacy_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
)
from services.platform import topics
from services.platform.bus import Bus
from services.platform.errors import InvalidArgument, NotFound
from services.platform.timestamps import timestamp
from services.platform.validation import check_id, check_ids, load_json
from services.profile.commerce import LoyaltyRules, cart, loyalty, summarize_orders
from services.profile.engagement import CONSENT_UPDATED, engagement, validate_consent
from services.profile.fold import TRACK, ResolvedEvent, fold
from services.profile.privacy_requests import KINDS, PrivacyRequests, PrivacyStatus
from services.profile.records import ConsentState, TimelineRecord, json_object
from services.profile.store import ProfileStore, StoredGroup, StoredProfile

Context = grpc.aio.ServicerContext[Any, Any]


def _consent(purpose: str, decision: ConsentState) -> profile_pb2.ConsentState:
    return profile_pb2.ConsentState(
        purpose=purpose,
        state=decision["state"],
        source=decision.get("source", ""),
        at=timestamp(decision["at"]),
    )


def _money(currency: str, amount_minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency=currency, amount_minor=amount_minor)


def to_proto(
    profile: StoredProfile, rules: LoyaltyRules | None = None, now: datetime | None = None
) -> profile_pb2.Profile:
    """The wire form of a stored profile, with its order and loyalty figures as of ``now``."""
    rules = rules or LoyaltyRules()
    now = now or datetime.now(UTC)
    traits = Struct()
    traits.update(profile.traits)
    summary = summarize_orders(profile.orders, rules.base_currency)
    basket = cart(profile.cart)
    status = loyalty(profile.orders, profile.redeemed, rules, now)
    return profile_pb2.Profile(
        customer_id=profile.customer_id,
        traits=traits,
        event_counts=profile.event_counts,
        first_seen=timestamp(profile.first_seen),
        last_seen=timestamp(profile.last_seen),
        orders=profile_pb2.OrdersSummary(
            order_count=summary.order_count,
            revenue=[_money(c, a) for c, a in sorted(summary.revenue_minor.items())],
            average_order_value=_money(rules.base_currency, summary.average_order_minor),
            first_order_at=timestamp(summary.first_order_at),
            last_order_at=timestamp(summary.last_order_at),
            purchase_days=summary.purchase_days,
            repeat_purchase_average=_money(rules.base_currency, summary.repeat_average_minor),
        ),
        consent=[_consent(p, c) for p, c in sorted(profile.consent.items())],
        consent_history=[_consent(e["purpose"], e) for e in profile.consent_history],
        behaviour=profile_pb2.Behaviour(
            devices=profile.devices,
            cart_open=basket.open,
            cart_updated_at=timestamp(basket.last_added_at),
            channels=profile.channels,
            sources=profile.sources,
            last_page=profile.last_page["name"] if profile.last_page else "",
            last_page_at=timestamp(profile.last_page["at"] if profile.last_page else None),
            last_screen=profile.last_screen["name"] if profile.last_screen else "",
            last_screen_at=timestamp(profile.last_screen["at"] if profile.last_screen else None),
            session_count=profile.sessions.count,
            last_session_started_at=timestamp(profile.sessions.last_started_at),
            last_active_at=timestamp(profile.sessions.last_active_at),
        ),
        engagement=[
            profile_pb2.EngagementStat(kind=e.kind, count=e.count, last_at=timestamp(e.last_at))
            for e in engagement(profile.event_counts, profile.event_last)
        ],
        loyalty=profile_pb2.Loyalty(
            points=status.points,
            points_redeemed=status.points_redeemed,
            cashback_balance=_money(rules.base_currency, status.cashback_minor),
            tier=status.tier,
            tier_since=timestamp(status.tier_since),
            spend_last_12_months=_money(rules.base_currency, status.spend_last_year_minor),
            purchases_last_12_months=status.purchases_last_year,
        ),
    )


def group_proto(group: StoredGroup) -> profile_pb2.Group:
    """The wire form of a stored group."""
    traits = Struct()
    traits.update(group.traits)
    return profile_pb2.Group(
        id=group.group_id,
        traits=traits,
        member_count=group.member_count,
        created_at=timestamp(group.created_at),
        updated_at=timestamp(group.updated_at),
    )


MAX_BATCH = 1_000
MAX_PAGE = 200
DEFAULT_PAGE = 50
# A token holds a time, an event id (at most 512 characters) and a count, base64-encoded.
MAX_TOKEN_LENGTH = 1_024
MAX_REQUEST_ID_LENGTH = 128
# A timeline request filters on at most this many event names, each at most this long.
MAX_TIMELINE_NAMES = 20
MAX_EVENT_NAME_LENGTH = 256
# Groups per customer a BatchListCustomerGroups page holds at most.
MAX_GROUP_PAGE = 1_000


def _write_token(at: datetime, event_id: str, shown: int) -> str:
    raw = json.dumps({"at": at.isoformat(), "id": event_id, "n": shown})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _read_token(token: str, where: str = "") -> tuple[tuple[datetime, str] | None, int]:
    if not token:
        return None, 0
    refused = f"{where}page_token is not one this service issued"
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument(refused)
    try:
        # A token nests one level; load_json refuses deep nesting before parsing it.
        data = load_json(base64.urlsafe_b64decode(token.encode()).decode(), 2)
        return (datetime.fromisoformat(data["at"]), str(data["id"])), int(data["n"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(refused) from None


def _check_timeline_request(request: profile_pb2.ListTimelineRequest, where: str) -> None:
    """Refuse a timeline request naming the field (``where`` prefixes it in a batch)."""
    check_id(f"{where}customer_id", request.customer_id)
    if not 0 <= request.page_size <= MAX_PAGE:
        raise InvalidArgument(f"{where}page_size must be between 1 and {MAX_PAGE}")
    if len(request.names) > MAX_TIMELINE_NAMES:
        raise InvalidArgument(f"{where}names: at most {MAX_TIMELINE_NAMES}")
    for position, name in enumerate(request.names):
        check_id(f"{where}names[{position}]", name, limit=MAX_EVENT_NAME_LENGTH)
    _read_token(request.page_token, where)


def _entry(entry: TimelineRecord, cursor: str) -> profile_pb2.TimelineEntry:
    properties, traits = Struct(), Struct()
    properties.update(entry["properties"])
    traits.update(entry["traits"])
    return profile_pb2.TimelineEntry(
        event_id=entry["_id"],
        type=entry["type"],
        name=entry["name"],
        at=timestamp(entry["at"]),
        source=entry["source"],
        properties=properties,
        traits=traits,
        cursor=cursor,
    )


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    """Serves profiles."""

    def __init__(self, store: ProfileStore, rules: LoyaltyRules | None = None) -> None:
        self.store = store
        self.rules = rules or LoyaltyRules()

    async def BatchGetProfiles(
        self,
        request: profile_pb2.BatchGetProfilesRequest,
        context: Context,
    ) -> profile_pb2.BatchGetProfilesResponse:
        """The profiles of many customers; unknown ids are left out."""
        ids = check_ids("customer_ids", request.customer_ids, most=MAX_BATCH)
        found = await self.store.get_many(ids)
        return profile_pb2.BatchGetProfilesResponse(
            profiles={asked: to_proto(profile, self.rules) for asked, profile in found.items()}
        )

    async def Export(
        self, request: profile_pb2.ExportRequest, context: Context
    ) -> profile_pb2.ExportResponse:
        """Everything the profile service holds about the customer."""
        profile = await self._profile(request.customer_id)
        data = Struct()
        data.update(json_object(profile.export()))
        return profile_pb2.ExportResponse(customer_id=profile.customer_id, data=data)

    async def Erase(
        self,
        request: profile_pb2.EraseProfileRequest,
        context: Context,
    ) -> profile_pb2.EraseProfileResponse:
        """Delete the customer's profile (a no-op for an unknown customer)."""
        check_id("customer_id", request.customer_id)
        erased = await self.store.erase(request.customer_id)
        return profile_pb2.EraseProfileResponse(customer_id=request.customer_id, erased=erased)

    async def _profile(self, customer_id: str) -> StoredProfile:
        check_id("customer_id", customer_id)
        profile = await self.store.get(customer_id)
        if profile is None:
            raise NotFound(f"customer {customer_id!r} has no profile")
        return profile

    async def SetConsent(
        self, request: profile_pb2.SetConsentRequest, context: Context
    ) -> profile_pb2.Profile:
        """Record a consent decision now, exactly as a ``Consent Updated`` event would."""
        check_id("customer_id", request.customer_id)
        check_id("source", request.source, required=False)
        try:
            validate_consent(request.purpose, request.state)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        event = ResolvedEvent(
            event_id=f"consent-{uuid.uuid4()}",
            customer_id=request.customer_id,
            kind=TRACK,
            name=CONSENT_UPDATED,
            occurred_at=datetime.now(UTC),
            properties={"purpose": request.purpose, "state": request.state},
            source=request.source or "api",
        )
        await self.store.apply([fold(event)])
        return to_proto(await self._profile(request.customer_id), self.rules)

    async def ListTimeline(
        self,
        request: profile_pb2.ListTimelineRequest,
        context: Context,
    ) -> profile_pb2.ListTimelineResponse:
        """A page of the customer's recent events, newest first, up to the configured cap."""
        return await self._timeline_page(request, "")

    async def BatchListTimeline(
        self,
        request: profile_pb2.BatchListTimelineRequest,
        context: Context,
    ) -> profile_pb2.BatchListTimelineResponse:
        """Many timeline pages, each answered in its request's position."""
        if len(request.requests) > MAX_BATCH:
            raise InvalidArgument(f"requests: at most {MAX_BATCH} per call")
        # Everything is checked before any read, so a bad request reads nothing.
        for position, one in enumerate(request.requests):
            _check_timeline_request(one, f"requests[{position}].")
        pages = await asyncio.gather(
            *(
                self._timeline_page(one, f"requests[{position}].")
                for position, one in enumerate(request.requests)
            )
        )
        return profile_pb2.BatchListTimelineResponse(responses=pages)

    async def _timeline_page(
        self, request: profile_pb2.ListTimelineRequest, where: str
    ) -> profile_pb2.ListTimelineResponse:
        _check_timeline_request(request, where)
        after, shown = _read_token(request.page_token, where)
        cap = self.store.timeline_cap
        size = min(request.page_size or DEFAULT_PAGE, cap - shown)
        names = list(request.names)
        entries = (
            await self.store.list_timeline(request.customer_id, size, after, names)
            if size > 0
            else []
        )
        token = ""
        if len(entries) == size and size > 0 and shown + size < cap:
            token = _write_token(entries[-1]["at"], entries[-1]["_id"], shown + size)
        return profile_pb2.ListTimelineResponse(
            entries=[
                _entry(
                    e, _write_token(e["at"], e["_id"], shown + n + 1) if shown + n + 1 < cap else ""
                )
                for n, e in enumerate(entries)
            ],
            next_page_token=token,
        )

    async def GetProfile(
        self, request: profile_pb2.GetProfileRequest, context: Context
    ) -> profile_pb2.Profile:
        """The profile of ``request.customer_id``; NOT_FOUND before its first event."""
        return to_proto(await self._profile(request.customer_id), self.rules)

    async def GetGroup(
        self, request: profile_pb2.GetGroupRequest, context: Context
    ) -> profile_pb2.Group:
        """The group ``request.group_id``; NOT_FOUND before its first group call."""
        check_id("group_id", request.group_id)
        group = await self.store.get_group(request.group_id)
        if group is None:
            raise NotFound("no such group")
        return group_proto(group)

    async def BatchListCustomerGroups(
        self,
        request: profile_pb2.BatchListCustomerGroupsRequest,
        context: Context,
    ) -> profile_pb2.BatchListCustomerGroupsResponse:
        """The groups of many customers, a page each when ``page_size`` is set; every id asked
        for is answered (maybe with none)."""
        ids = check_ids("customer_ids", request.customer_ids, most=MAX_BATCH)
        if not 0 <= request.page_size <= MAX_GROUP_PAGE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_GROUP_PAGE}")
        after = _read_group_token(request.page_token)
        # One more than the page tells whether another page follows.
        most = request.page_size + 1 if request.page_size else None
        found = await self.store.groups_of(ids, after, most)
        return profile_pb2.BatchListCustomerGroupsResponse(
            customers={
                asked: _customer_groups(groups, request.page_size)
                for asked, groups in found.items()
            }
        )


def _write_group_token(group_id: str) -> str:
    return base64.urlsafe_b64encode(group_id.encode()).decode()


def _read_group_token(token: str) -> str:
    if not token:
        return ""
    refused = InvalidArgument("page_token is not one this service issued")
    if len(token) > MAX_TOKEN_LENGTH:
        raise refused
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except ValueError:
        raise refused from None


def _customer_groups(groups: list[StoredGroup], page_size: int) -> profile_pb2.CustomerGroups:
    page = groups[:page_size] if page_size else groups
    more = page_size > 0 and len(groups) > page_size
    return profile_pb2.CustomerGroups(
        groups=[group_proto(g) for g in page],
        next_page_token=_write_group_token(page[-1].group_id) if more else "",
        cursors=[_write_group_token(g.group_id) for g in page],
    )


def status_proto(status: PrivacyStatus) -> privacy_pb2.PrivacyRequestStatus:
    """The wire form of where a privacy request stands."""
    done, pending = (
        privacy_pb2.PRIVACY_REQUEST_STATE_DONE,
        privacy_pb2.PRIVACY_REQUEST_STATE_PENDING,
    )
    message = privacy_pb2.PrivacyRequestStatus(
        request_id=status.request_id,
        kind=status.kind,
        state=done if status.done else pending,
        services=[
            privacy_pb2.ServicePrivacyStatus(
                service=s.service,
                state=done if s.done else pending,
                completed_at=timestamp(s.completed_at),
            )
            for s in status.services
        ],
        requested_at=timestamp(status.requested_at),
        completed_at=timestamp(status.completed_at),
    )
    if status.export is not None:
        message.export.update(status.export)
    return message


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    """Submit privacy requests and follow them to done."""

    def __init__(self, requests: PrivacyRequests, bus: Bus) -> None:
        self.requests = requests
        self.bus = bus

    async def SubmitPrivacyRequest(
        self,
        request: privacy_pb2.SubmitPrivacyRequestRequest,
        context: Context,
    ) -> privacy_pb2.PrivacyRequestStatus:
        """Record the request, then publish it to every service."""
        check_id("customer_id", request.customer_id)
        if request.kind not in KINDS:
            raise InvalidArgument("kind must be PRIVACY_REQUEST_KIND_ERASE or _EXPORT")
        if len(request.request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(f"request_id: at most {MAX_REQUEST_ID_LENGTH} characters")
        request_id = request.request_id or str(uuid.uuid4())
        now = datetime.now(UTC)
        await self.requests.open(request_id, request.kind, now)
        message = events_pb2.PrivacyRequest(
            request_id=request_id, kind=request.kind, customer_id=request.customer_id
        )
        message.requested_at.FromDatetime(now)
        await self.bus.publish(topics.PRIVACY, request.customer_id, message)
        return status_proto(await self.requests.status(request_id))

    async def GetPrivacyRequest(
        self,
        request: privacy_pb2.GetPrivacyRequestRequest,
        context: Context,
    ) -> privacy_pb2.PrivacyRequestStatus:
        """Pending or done, per service."""
        check_id("request_id", request.request_id, limit=MAX_REQUEST_ID_LENGTH)
        return status_proto(await self.requests.status(request.request_id))
