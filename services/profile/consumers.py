"""Kafka handlers of the profile service: resolved events folded into profiles."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter

from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, Delivery, Pending
from services.platform.errors import PoisonMessage
from services.platform.merges import Merge, MergeHandler
from services.platform.privacy import Export
from services.platform.timestamps import event_time
from services.profile.api import to_proto
from services.profile.commerce import LoyaltyRules
from services.profile.fold import (
    GROUP,
    IDENTIFY,
    TRACK,
    WATCHED,
    ProfileDelta,
    ResolvedEvent,
    changed_paths,
    fold,
)
from services.profile.groups import group_change
from services.profile.privacy_requests import PrivacyAnswer, PrivacyRequests
from services.profile.records import JsonObject, json_object
from services.profile.store import ProfileStore

SERVICE = "profile"
_CHANGE_NAMESPACE = uuid.UUID("5d2c8e4a-1b7f-4a93-8c6e-2f0d9b3a7e51")
FOLDED = Counter(
    "lodestar_profile_events_folded_total",
    "Resolved events folded into profiles; 'duplicate' counts redeliveries skipped",
    ["outcome"],
)

_KINDS = {
    events_pb2.EVENT_TYPE_TRACK: TRACK,
    events_pb2.EVENT_TYPE_IDENTIFY: IDENTIFY,
    events_pb2.EVENT_TYPE_PAGE: "page",
    events_pb2.EVENT_TYPE_SCREEN: "screen",
    events_pb2.EVENT_TYPE_GROUP: GROUP,
}


def to_resolved_event(event: events_pb2.Event) -> ResolvedEvent:
    """Translate the Kafka payload into the fold's input."""
    if not event.customer_id or not event.event_id:
        raise PoisonMessage("resolved event without customer_id or event_id")
    stamp = event.timestamp if event.HasField("timestamp") else event.received_at
    # Events can reach Kafka by other paths than the gateway's checks: bound their time here.
    received = event.received_at.ToDatetime(UTC) if event.HasField("received_at") else None
    occurred_at = event_time(stamp.ToDatetime(UTC), received, datetime.now(UTC))
    traits = MessageToDict(event.traits) if event.HasField("traits") else {}
    context = MessageToDict(event.context) if event.HasField("context") else {}
    context_traits = context.get("traits")
    kind = _KINDS.get(event.type, "other")
    group_traits: JsonObject = {}
    if kind == GROUP:
        # A group call's traits are the group's; only context.traits describe the user.
        group_traits, traits = traits, {}
    if isinstance(context_traits, dict):
        traits = {**context_traits, **traits}
    return ResolvedEvent(
        event_id=event.event_id,
        customer_id=event.customer_id,
        kind=kind,
        name=event.name,
        occurred_at=occurred_at,
        traits=traits,
        properties=MessageToDict(event.properties) if event.HasField("properties") else {},
        source=event.source,
        channel=str(context.get("channel") or ""),
        device=_device(context),
        group_id=event.group_id if kind == GROUP else "",
        group_traits=group_traits,
    )


def _device(context: JsonObject) -> str:
    """``type/model`` of the device (``ios/iPhone15,2``), or ``""``."""
    device = context.get("device")
    if not isinstance(device, dict):
        return ""
    parts = [str(device[k]) for k in ("type", "model") if isinstance(device.get(k), str)]
    return "/".join(parts)


class ResolvedEventHandler:
    """Folds a batch of resolved events into profiles with one bulk write, then announces
    each changed profile on ``profile.changed``."""

    def __init__(
        self, store: ProfileStore, bus: Bus | None = None, rules: LoyaltyRules | None = None
    ) -> None:
        self.store = store
        self.bus = bus
        self.rules = rules or LoyaltyRules()

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> Pending | None:
        """Store the batch's effect; the announcements are handed back as pending so the bus
        commits once they are acknowledged."""
        events = [to_resolved_event(d.message) for d in batch]
        deltas = [fold(e) for e in events]
        groups = [c for e in events if (c := group_change(e)) is not None]
        applied, _, _ = await asyncio.gather(
            self.store.apply(deltas), self.store.record(events), self.store.apply_groups(groups)
        )
        FOLDED.labels("applied").inc(applied)
        FOLDED.labels("duplicate").inc(len(batch) - applied)
        if self.bus is None:
            return None
        changes = await self._announcements(deltas)
        return await self.bus.publish_many_later(
            [(topics.PROFILE_CHANGED, c.customer_id, c) for c in changes]
        )

    async def _announcements(
        self, deltas: Sequence[ProfileDelta]
    ) -> list[events_pb2.ProfileChanged]:
        by_customer: dict[str, list[ProfileDelta]] = {}
        for delta in deltas:
            by_customer.setdefault(delta.customer_id, []).append(delta)
        paths = {c: set().union(*(changed_paths(d) for d in ds)) for c, ds in by_customer.items()}
        watched = {c for c, p in paths.items() if any(p_.split(".")[0] in WATCHED for p_ in p)}
        profiles = await self.store.get_many(list(by_customer))
        now = datetime.now(UTC)
        changes = []
        for customer_id, customer_deltas in by_customer.items():
            ids = sorted(d.event_id for d in customer_deltas)
            change = events_pb2.ProfileChanged(
                event_id=str(uuid.uuid5(_CHANGE_NAMESPACE, f"{customer_id}:{','.join(ids)}")),
                customer_id=customer_id,
                changed_paths=sorted(paths[customer_id]),
                caused_by_event_id=customer_deltas[-1].event_id,
            )
            change.changed_at.FromDatetime(now)
            profile = profiles.get(customer_id)
            if profile is not None:
                view = to_proto(profile, self.rules, now)
                change.loyalty.CopyFrom(view.loyalty)
                change.consent.extend(view.consent)
                change.trait_names.extend(sorted(view.traits.fields))
                for name in self.store.pii_traits & set(view.traits.fields):
                    del view.traits.fields[name]  # PII stays in the profile service
                change.profile.CopyFrom(view)
            # The profile just read says whether the tier moved (never announced: the base
            # tier); only a move is written, atomically, so it is announced once.
            if (
                profile is not None
                and customer_id in watched
                and (profile.announced_tier or self.rules.tiers[0][0]) != view.loyalty.tier
            ):
                previous = await self.store.announce_tier(profile.customer_id, view.loyalty.tier)
                # Never announced before: the customer started in the base tier.
                previous = previous or (None if previous is None else self.rules.tiers[0][0])
                if previous is not None and previous != view.loyalty.tier:
                    change.tier_changed = True
                    change.old_tier, change.new_tier = previous, view.loyalty.tier
            changes.append(change)
        return changes


def merge_handler(store: ProfileStore) -> MergeHandler:
    """The ``identity.merged`` handler of profile: merged customers' profiles fold into the
    survivor's (a redelivered merge changes nothing, counted as a duplicate)."""

    async def follow(merge: Merge) -> None:
        applied = await store.merge(merge.event_id, merge.survivor_id, list(merge.merged_ids))
        FOLDED.labels("merge" if applied else "duplicate").inc()

    return MergeHandler(follow)


def privacy_export(store: ProfileStore) -> Export:
    """The profile's privacy export as the privacy handler answers it: plain JSON."""

    async def export(customer_id: str) -> JsonObject:
        return json_object(await store.export(customer_id))

    return export


def privacy_answer(completed: events_pb2.PrivacyCompleted) -> PrivacyAnswer:
    """A ``privacy.completed`` message as the answer it records (poison without a request
    id or a service)."""
    if not completed.request_id or not completed.service:
        raise PoisonMessage("privacy completion without request_id or service")
    at = completed.completed_at.ToDatetime(UTC) if completed.HasField("completed_at") else None
    export = MessageToDict(completed.export) if completed.HasField("export") else None
    return PrivacyAnswer(
        request_id=completed.request_id,
        service=completed.service,
        kind=completed.kind,
        completed_at=at or datetime.now(UTC),
        export=export,
    )


class CompletionHandler:
    """Records answers from ``privacy.completed``."""

    def __init__(self, requests: PrivacyRequests) -> None:
        self.requests = requests

    async def __call__(self, batch: Sequence[Delivery[events_pb2.PrivacyCompleted]]) -> None:
        """Record each answer (idempotent)."""
        for delivery in batch:
            await self.requests.answer(privacy_answer(delivery.message))
