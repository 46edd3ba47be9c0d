"""How one resolved event changes a profile, as pure logic.

Identify events set traits; track events count per event name; e-commerce events write
order records and loyalty redemptions (see :mod:`services.profile.commerce`); every event
moves first/last seen. The store applies a :class:`ProfileDelta` atomically together with
the event id, which makes folding idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.platform.fieldnames import field_key, original_name
from services.profile import commerce, engagement, sessions
from services.profile.records import JsonObject

TRACK = "track"
IDENTIFY = "identify"
GROUP = "group"


@dataclass(frozen=True)
class ResolvedEvent:
    """What the fold needs of a resolved event."""

    event_id: str
    customer_id: str
    kind: str
    name: str
    occurred_at: datetime
    traits: JsonObject = field(default_factory=dict)
    properties: JsonObject = field(default_factory=dict)
    source: str = ""
    channel: str = ""
    device: str = ""
    # group calls: the group and its traits (``traits`` holds only the user's, from
    # ``context.traits``).
    group_id: str = ""
    group_traits: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileDelta:
    """The change one event makes: traits to set, counters to add, when it was seen."""

    event_id: str
    customer_id: str
    set_traits: JsonObject
    count_increments: dict[str, int]
    seen_at: datetime
    # Other document paths: set (orders) and added to (loyalty redemptions).
    set_fields: dict[str, Any] = field(default_factory=dict)
    inc_fields: dict[str, int] = field(default_factory=dict)
    timed_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    appends: dict[str, list[Any]] = field(default_factory=dict)
    unions: dict[str, list[str]] = field(default_factory=dict)
    latest: dict[str, datetime] = field(default_factory=dict)
    # When the customer was active (track, page and screen events), for sessions.
    active_at: datetime | None = None


ACTIVE_KINDS = (TRACK, "page", "screen")


def behaviour(event: ResolvedEvent) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Last page/screen (timed) and the channels and sources seen (sets)."""
    timed: dict[str, dict[str, Any]] = {}
    if event.kind in ("page", "screen") and event.name:
        timed[f"last_{event.kind}"] = {"name": event.name, "at": event.occurred_at}
    unions = {
        path: [value]
        for path, value in (
            ("channels", event.channel),
            ("sources", event.source),
            ("devices", event.device),
        )
        if value
    }
    # A cart is open while its latest addition is newer than the latest order: both are
    # kept by time, so the answer does not depend on the order events arrive in. "at" comes
    # first: the store keeps the later one with $max, which compares documents key by key.
    if event.kind == TRACK and event.name == commerce.PRODUCT_ADDED:
        product = event.properties.get("product_id") or event.properties.get("sku") or ""
        timed["cart.last_added"] = {"at": event.occurred_at, "product_id": str(product)}
    if event.kind == TRACK and event.name == commerce.ORDER_COMPLETED:
        timed["cart.last_ordered"] = {"at": event.occurred_at}
    return timed, unions


def consent(event: ResolvedEvent) -> tuple[dict[str, dict[str, Any]], dict[str, list[Any]]]:
    """Consent per purpose (timed) and its history entries, from ``Consent Updated``."""
    if event.kind != TRACK or event.name != engagement.CONSENT_UPDATED:
        return {}, {}
    changes = engagement.consent_changes(event.properties)
    entries = [
        {
            "purpose": p,
            "state": s,
            "source": event.source,
            "at": event.occurred_at,
            "event_id": event.event_id,
        }
        for p, s in sorted(changes.items())
    ]
    timed = {
        f"consent.{p}": {"state": s, "source": event.source, "at": event.occurred_at}
        for p, s in changes.items()
    }
    return timed, ({"consent_history": entries} if entries else {})


def fold(event: ResolvedEvent) -> ProfileDelta:
    """The profile change an event causes."""
    counts = {field_key(event.name): 1} if event.kind == TRACK and event.name else {}
    traits = {field_key(k): v for k, v in event.traits.items()}
    set_fields: dict[str, Any] = {}
    inc_fields: dict[str, int] = {}
    if event.kind == TRACK:
        order_id = event.properties.get("order_id")
        if isinstance(order_id, str | int) and not isinstance(order_id, bool) and order_id != "":
            set_fields = commerce.order_fields(
                event.name, event.properties, event.occurred_at, field_key(str(order_id))
            )
        if event.name == commerce.POINTS_REDEEMED:
            points = event.properties.get("points")
            if isinstance(points, int | float) and not isinstance(points, bool) and points > 0:
                inc_fields["loyalty.points_redeemed"] = int(points)
        if event.name == commerce.CASHBACK_REDEEMED:
            amount = commerce.minor_units(event.properties.get("amount"))
            if amount is not None and amount > 0:
                inc_fields["loyalty.cashback_redeemed_minor"] = amount
    timed, unions = behaviour(event)
    consent_timed, appends = consent(event)
    timed.update(consent_timed)
    latest = {f"event_last.{key}": event.occurred_at for key in counts}
    return ProfileDelta(
        event_id=event.event_id,
        customer_id=event.customer_id,
        set_traits=traits,
        count_increments=counts,
        seen_at=event.occurred_at,
        set_fields=set_fields,
        inc_fields=inc_fields,
        timed_fields=timed,
        appends=appends,
        unions=unions,
        latest=latest,
        active_at=event.occurred_at if event.kind in ACTIVE_KINDS else None,
    )


@dataclass(frozen=True)
class MergedDelta:
    """Several deltas of one customer combined: counters summed, later traits win."""

    set_traits: JsonObject
    count_increments: dict[str, int]
    first_seen: datetime
    last_seen: datetime
    set_fields: dict[str, Any] = field(default_factory=dict)
    inc_fields: dict[str, int] = field(default_factory=dict)
    # When each trait in ``set_traits`` was true (its event's own time): the store keeps a
    # trait only if it is newer than the one it holds, so order of arrival does not matter.
    trait_times: dict[str, datetime] = field(default_factory=dict)
    # Values that carry their own "at" and replace an older one only (consent, last page).
    timed_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Entries appended (consent history), members added to sets, latest times kept.
    appends: dict[str, list[Any]] = field(default_factory=dict)
    unions: dict[str, list[str]] = field(default_factory=dict)
    latest: dict[str, datetime] = field(default_factory=dict)
    # Activity times, for sessions.
    active: list[datetime] = field(default_factory=list)


def merge(deltas: Sequence[ProfileDelta]) -> MergedDelta:
    """Combine one customer's deltas, given in arrival order, into a single change: counters
    summed, each trait from the latest event by the event's own time (ties: last arrived)."""
    traits: JsonObject = {}
    times: dict[str, datetime] = {}
    counts: dict[str, int] = {}
    set_fields: dict[str, Any] = {}
    inc_fields: dict[str, int] = {}
    timed: dict[str, dict[str, Any]] = {}
    appends: dict[str, list[Any]] = {}
    unions: dict[str, list[str]] = {}
    latest: dict[str, datetime] = {}
    for delta in deltas:
        for path, value in delta.timed_fields.items():
            if path not in timed or value["at"] >= timed[path]["at"]:
                timed[path] = value
        for path, entries in delta.appends.items():
            appends.setdefault(path, []).extend(entries)
        for path, members in delta.unions.items():
            unions[path] = sorted({*unions.get(path, []), *members})
        for path, at in delta.latest.items():
            latest[path] = max(at, latest.get(path, at))
        for key, value in delta.set_traits.items():
            if key not in times or delta.seen_at >= times[key]:
                traits[key] = value
                times[key] = delta.seen_at
        set_fields.update(delta.set_fields)
        for name, n in delta.count_increments.items():
            counts[name] = counts.get(name, 0) + n
        for path, n in delta.inc_fields.items():
            inc_fields[path] = inc_fields.get(path, 0) + n
    return MergedDelta(
        set_traits=traits,
        count_increments=counts,
        first_seen=min(d.seen_at for d in deltas),
        last_seen=max(d.seen_at for d in deltas),
        set_fields=set_fields,
        inc_fields=inc_fields,
        trait_times=times,
        timed_fields=timed,
        appends=appends,
        unions=unions,
        latest=latest,
        active=[d.active_at for d in deltas if d.active_at is not None],
    )


@dataclass(frozen=True)
class ProfileSnapshot:
    """What a merge needs of a stored profile: its settable fields by storage path
    (``traits.<key>``, ``pii.<key>``), its counters, and when it was seen."""

    customer_id: str
    fields: dict[str, Any]
    counters: dict[str, int]
    first_seen: datetime | None
    last_seen: datetime | None
    # When a field's value became true (traits: their event's time), where known.
    stamps: dict[str, datetime] = field(default_factory=dict)
    # The most recent activity times (sessions are derived from them).
    activity: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class ProfileMerge:
    """The change folding merged profiles into the survivor makes to the survivor."""

    set_fields: dict[str, Any]
    inc_fields: dict[str, int]
    first_seen: datetime | None
    last_seen: datetime | None


def fold_merged(
    survivor: ProfileSnapshot | None, merged: Sequence[ProfileSnapshot]
) -> ProfileMerge:
    """Counters add up; for a field both hold, the newer value wins (its own time where
    known, else the profile seen most recently); first and last seen widen; activity times
    (sessions) combine. Only fields a merged profile wins are set on the survivor, with
    their times."""
    counts: dict[str, int] = {}
    for profile in merged:
        for path, n in profile.counters.items():
            counts[path] = counts.get(path, 0) + n
    everyone = ([survivor] if survivor else []) + list(merged)
    session_fields: dict[str, Any] = {}
    if any(p.activity for p in merged):
        session_fields["activity"] = sessions.combined(p.activity for p in everyone)
    best: dict[str, tuple[tuple[bool, datetime], str, Any]] = {}
    for profile in everyone:
        for path, value in profile.fields.items():
            when = profile.stamps.get(path) or profile.last_seen
            rank = (when is not None, when or datetime.min)
            if path not in best or rank > best[path][0]:
                best[path] = (rank, profile.customer_id, value)
    winner = {path: (owner, value) for path, (_, owner, value) in best.items()}
    for path, (_, owner, _) in best.items():
        stamp = next((p.stamps.get(path) for p in everyone if p.customer_id == owner), None)
        if stamp is not None:
            winner[f"trait_at.{path.split('.', 1)[1]}"] = (owner, stamp)
    survivor_id = survivor.customer_id if survivor else None
    firsts = [p.first_seen for p in merged if p.first_seen is not None]
    lasts = [p.last_seen for p in merged if p.last_seen is not None]
    return ProfileMerge(
        set_fields={
            **{k: v for k, (owner, v) in winner.items() if owner != survivor_id},
            **session_fields,
        },
        inc_fields=counts,
        first_seen=min(firsts, default=None),
        last_seen=max(lasts, default=None),
    )


WATCHED = ("orders", "loyalty", "consent")


def changed_paths(delta: ProfileDelta) -> set[str]:
    """The profile paths an event changes, as announced on ``profile.changed``: traits and
    counters by name, orders, loyalty and consent per purpose, behaviour fields."""
    paths = {f"traits.{original_name(k)}" for k in delta.set_traits}
    paths |= {f"event_counts.{original_name(k)}" for k in delta.count_increments}
    # Set memberships (channels, sources) are left out: adding a member already there
    # changes nothing, and telling which is which would cost a read per event.
    for path in [*delta.set_fields, *delta.inc_fields, *delta.timed_fields]:
        head = path.split(".", 1)[0]
        if head == "orders":
            paths |= {"orders", "loyalty"}  # points, cashback and tier derive from orders
        elif head == "loyalty":
            paths.add(head)
        elif head in ("last_page", "last_screen", "cart"):
            paths.add(f"behaviour.{head}")
        else:
            paths.add(path)
    if delta.active_at is not None:
        paths.add("behaviour.sessions")
    return paths
