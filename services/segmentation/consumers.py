"""Kafka handlers of segmentation: profile changes and resolved events in, evaluation of
the segments they can affect; merges and privacy requests.

Profile changes carry the whole profile; it is translated here into the document rules read
(see :mod:`services.segmentation.rules`), in base-currency units, with PII traits by name
only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict

from lodestar.v1 import common_pb2, events_pb2
from services.platform.bus import Delivery
from services.platform.destinations import SEGMENTS, event_allows
from services.platform.errors import PoisonMessage
from services.platform.fieldnames import field_key
from services.platform.merges import Merge, MergeHandler
from services.platform.timestamps import field_time, time_of
from services.segmentation.audience import Audiences
from services.segmentation.records import StoredEvent
from services.segmentation.segments import Segment

# Properties kept with stored events: scalars only, never these (personal data).
_PRIVATE_PROPERTIES = frozenset({"email", "phone", "name", "address", "first_name", "last_name"})


def _amount(money: common_pb2.Money) -> float:
    return money.amount_minor / 100


def profile_document(change: events_pb2.ProfileChanged) -> dict[str, Any]:
    """The profile as rules read it (missing values left out): a profile view."""
    p = change.profile
    base = p.orders.average_order_value.currency or p.loyalty.cashback_balance.currency
    revenue = sum(m.amount_minor for m in p.orders.revenue if m.currency == base) / 100
    behaviour = p.behaviour
    doc: dict[str, Any] = {
        "_id": change.customer_id,
        "traits": {field_key(k): v for k, v in MessageToDict(p.traits).items()},
        "traits_present": list(change.trait_names),
        "event_counts": {field_key(k): v for k, v in p.event_counts.items()},
        "first_seen": field_time(p, "first_seen"),
        "last_seen": field_time(p, "last_seen"),
        "orders": _drop_none(
            {
                "count": p.orders.order_count,
                "revenue": revenue,
                "average_order_value": _amount(p.orders.average_order_value),
                "first_order_at": field_time(p.orders, "first_order_at"),
                "last_order_at": field_time(p.orders, "last_order_at"),
                "purchase_days": p.orders.purchase_days,
                "repeat_average": _amount(p.orders.repeat_purchase_average),
            }
        ),
        "loyalty": _drop_none(
            {
                "tier": p.loyalty.tier or None,
                "points": p.loyalty.points,
                "points_redeemed": p.loyalty.points_redeemed,
                "cashback_balance": _amount(p.loyalty.cashback_balance),
                "spend_last_12_months": _amount(p.loyalty.spend_last_12_months),
                "purchases_last_12_months": p.loyalty.purchases_last_12_months,
                "tier_since": field_time(p.loyalty, "tier_since"),
            }
        ),
        "consent": {c.purpose: c.state for c in p.consent},
        "behaviour": _drop_none(
            {
                "session_count": behaviour.session_count,
                "last_active_at": field_time(behaviour, "last_active_at"),
                "cart_open": behaviour.cart_open,
                "cart_updated_at": field_time(behaviour, "cart_updated_at"),
                "channels": list(behaviour.channels),
                "sources": list(behaviour.sources),
                "devices": list(behaviour.devices),
                "last_page": behaviour.last_page or None,
                "last_screen": behaviour.last_screen or None,
            }
        ),
        "engagement": {
            e.kind: _drop_none({"count": e.count, "last_at": field_time(e, "last_at")})
            for e in p.engagement
        },
        "changed_at": field_time(change, "changed_at"),
    }
    return _drop_none(doc)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def event_record(event: events_pb2.Event) -> StoredEvent | None:
    """What segmentation keeps of a resolved track event (``None`` for other events)."""
    if event.type != events_pb2.EVENT_TYPE_TRACK or not event.name or not event.customer_id:
        return None
    at = time_of(event)
    properties = MessageToDict(event.properties) if event.HasField("properties") else {}
    return {
        "_id": event.event_id,
        "customer_id": event.customer_id,
        "name": event.name,
        "at": at,
        "properties": {
            k: v
            for k, v in properties.items()
            if isinstance(v, str | int | float | bool) and k not in _PRIVATE_PROPERTIES
        },
        "stored_at": datetime.now(UTC),
    }


class ProfileChangeHandler:
    """Keeps the profile views and evaluates the segments a change can affect."""

    def __init__(self, audiences: Audiences) -> None:
        self.audiences = audiences

    async def __call__(self, batch: Sequence[Delivery[events_pb2.ProfileChanged]]) -> None:
        """Store the views, then evaluate per customer the segments reading changed paths."""
        changes = [d.message for d in batch]
        for change in changes:
            if not change.customer_id:
                raise PoisonMessage("profile change without customer_id")
        views = {c.customer_id: profile_document(c) for c in changes if c.HasField("profile")}
        await self.audiences.save_profiles(list(views.values()))
        paths: dict[str, set[str]] = {}
        for change in changes:
            paths.setdefault(change.customer_id, set()).update(change.changed_paths)
        wanted = {c: self.audiences.reading(p) for c, p in paths.items()}
        await self.audiences.evaluate(wanted, cause=changes[-1].event_id, views=views)


class ResolvedEventHandler:
    """Keeps recent events for event conditions and evaluates the segments reading them."""

    def __init__(self, audiences: Audiences) -> None:
        self.audiences = audiences

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        """Store the track events, then evaluate the segments whose conditions name them.
        Events whose ``integrations`` turn "Lodestar Segments" off are left out."""
        events = [d.message for d in batch if event_allows(d.message.integrations, SEGMENTS)]
        records = [r for r in (event_record(e) for e in events) if r is not None]
        await self.audiences.save_events(records)
        names: dict[str, set[str]] = {}
        for record in records:
            names.setdefault(record["customer_id"], set()).add(record["name"])
        wanted: dict[str, list[Segment]] = {
            c: self.audiences.on_events(n) for c, n in names.items()
        }
        if records:
            await self.audiences.evaluate(wanted, cause=records[-1]["_id"])


def merge_handler(audiences: Audiences) -> MergeHandler:
    """``identity.merged``: each customer merged into another leaves its segments, and its
    events follow the survivor."""

    async def follow(merge: Merge) -> None:
        for merged_id in merge.merged_ids:
            await audiences.merge(merged_id, merge.survivor_id, cause=merge.event_id)

    return MergeHandler(follow)
