"""Keeping memberships right: evaluate segments for customers (real time) or over every
profile (backfill, and the scheduled recheck of time windows), publish who entered and left,
then record it.

Order of effects: membership events are published first and the memberships written after,
so a crash in between re-publishes on redelivery (with the same event ids) rather than
losing an event; without a crash, a redelivered input finds the memberships already
changed and emits nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.message import Message
from prometheus_client import Counter

from lodestar.v1 import events_pb2
from services.platform import topics
from services.segmentation.records import (
    MemberRecord,
    ProfileView,
    StoredEvent,
    membership_id,
)
from services.segmentation.rules import EventRecord, Rule
from services.segmentation.segments import (
    ENTERED,
    Catalog,
    Segment,
    Transition,
    transitions,
)

log = logging.getLogger(__name__)
CHANGES = Counter(
    "lodestar_segment_membership_changes_total",
    "Customers entering or leaving segments",
    ["change"],
)
EVALUATIONS = Counter(
    "lodestar_segment_evaluations_total", "Segment rules evaluated against one customer"
)
CHUNK = 500
_CHANGES = {
    "entered": events_pb2.MEMBERSHIP_CHANGE_ENTERED,
    "exited": events_pb2.MEMBERSHIP_CHANGE_EXITED,
}

Clock = Callable[[], datetime]


class AudienceStore(Protocol):
    """What audiences need of the store: profile views, recent events and memberships."""

    @property
    def event_retention_s(self) -> int:
        """How long recent events are kept (seconds)."""

    async def save_profiles(self, docs: Sequence[ProfileView]) -> None:
        """Replace the views of these customers."""

    async def profiles_for(self, customer_ids: Sequence[str]) -> dict[str, ProfileView]:
        """Views by customer id (unknown ids left out)."""

    async def count_profiles(self) -> int:
        """How many customers have a view."""

    async def matching(self, rule: Rule, now: datetime) -> set[str] | None:
        """Ids of the views ``rule`` selects, when the database can tell alone."""

    def stream_candidates(self, rule: Rule, now: datetime) -> AsyncIterator[ProfileView]:
        """Every view that can match ``rule``, in id order."""

    async def save_events(self, records: Sequence[StoredEvent]) -> None:
        """Store recent events (once each)."""

    async def events_for(
        self, customer_ids: Sequence[str], since: datetime
    ) -> dict[str, list[EventRecord]]:
        """Each customer's stored events since ``since``, oldest first."""

    async def move_customer(self, merged_id: str, survivor_id: str) -> None:
        """A merged customer's view goes; its events now belong to the survivor."""

    async def memberships_of(
        self, customer_ids: Sequence[str]
    ) -> dict[str, dict[str, MemberRecord]]:
        """customer id -> segment id -> membership."""

    def member_ids(self, segment_id: str) -> AsyncIterator[str]:
        """Every member of a segment, in customer id order."""

    async def members_among(self, segment_id: str, customer_ids: Sequence[str]) -> set[str]:
        """Which of these customers are members now."""

    async def apply_memberships(
        self, entered: Sequence[MemberRecord], exited: Sequence[tuple[str, str]]
    ) -> None:
        """Record entries and exits ((segment, customer) pairs)."""


class MembershipPublisher(Protocol):
    """Where membership events go (the bus, in the service)."""

    async def publish_many(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> None:
        """Send (topic, key, message) records; return once every one is acknowledged."""


def _now() -> datetime:
    return datetime.now(UTC)


class Audiences:
    """Evaluates segments and keeps memberships and membership events in step."""

    def __init__(
        self,
        store: AudienceStore,
        bus: MembershipPublisher | None,
        catalog: Catalog | None = None,
        clock: Clock = _now,
    ) -> None:
        self.store = store
        self.bus = bus
        self.catalog = catalog or Catalog()
        self.clock = clock

    async def evaluate(
        self,
        wanted: dict[str, list[Segment]],
        cause: str,
        now: datetime | None = None,
        views: Mapping[str, ProfileView] | None = None,
    ) -> int:
        """Evaluate, per customer, the segments given (with the profile views the caller
        has just stored, or those in the store); returns how many changed."""
        wanted = {c: s for c, s in wanted.items() if s}
        if not wanted:
            return 0
        now = now or self.clock()
        customers = list(wanted)
        missing = [c for c in customers if views is None or c not in views]
        profiles = dict(views or {})
        if missing:
            profiles.update(await self.store.profiles_for(missing))
        needs_events = [c for c, segs in wanted.items() if any(s.rule.uses_events for s in segs)]
        events = await self._events(needs_events, now)
        current = await self.store.memberships_of(customers)
        changes: list[Transition] = []
        for customer_id, segments in wanted.items():
            evaluated = {
                s.id: (
                    s.matches(profiles.get(customer_id), events.get(customer_id, []), now),
                    s.version,
                )
                for s in segments
            }
            EVALUATIONS.inc(len(evaluated))
            changes += transitions(customer_id, evaluated, current.get(customer_id, {}), now, cause)
        await self.apply(changes)
        return len(changes)

    async def _events(
        self, customers: Sequence[str], now: datetime
    ) -> dict[str, list[EventRecord]]:
        if not customers:
            return {}
        since = now - timedelta(seconds=self.store.event_retention_s)
        return await self.store.events_for(customers, since)

    async def apply(self, changes: Sequence[Transition]) -> None:
        """Publish the membership events, then record the memberships."""
        if not changes:
            return
        if self.bus is not None:
            await self.bus.publish_many(
                [(topics.SEGMENTS_MEMBERSHIP, t.customer_id, to_event(t)) for t in changes]
            )
        entered: list[MemberRecord] = [
            {
                "_id": membership_id(t.segment_id, t.customer_id),
                "segment_id": t.segment_id,
                "customer_id": t.customer_id,
                "since": t.at,
                "segment_version": t.segment_version,
            }
            for t in changes
            if t.change == ENTERED
        ]
        exited = [(t.segment_id, t.customer_id) for t in changes if t.change != ENTERED]
        await self.store.apply_memberships(entered, exited)
        for t in changes:
            CHANGES.labels(t.change).inc()

    async def reconcile(
        self,
        segment: Segment,
        progress: Callable[[int, int], Awaitable[None]] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Evaluate ``segment`` over every profile view (pushed down to a MongoDB query when
        the rule allows, streamed otherwise) and bring its memberships in line; returns how
        many changed. This is the backfill, and the scheduled recheck of time windows."""
        now = now or self.clock()
        total = await self.store.count_profiles()
        # Members are read before the rule is: a customer real time enters while this runs
        # is not a member here, so this older picture cannot take the entry back.
        members = {i async for i in self.store.member_ids(segment.id)}
        pushed_down = await self.store.matching(segment.rule, now)
        matched: set[str] = set()
        if pushed_down is not None:
            matched = pushed_down
            if progress is not None:
                await progress(total, total)
        else:
            evaluated = 0
            chunk: list[ProfileView] = []
            # Only candidates: the rule's field conditions narrow the stream in the database.
            async for doc in self.store.stream_candidates(segment.rule, now):
                chunk.append(doc)
                if len(chunk) == CHUNK:
                    matched |= await self._matching(segment, chunk, now)
                    evaluated += len(chunk)
                    chunk = []
                    if progress is not None:
                        await progress(evaluated, total)
            matched |= await self._matching(segment, chunk, now)
            if progress is not None:
                await progress(evaluated + len(chunk), total)
        cause = f"reconcile:{segment.id}:{segment.version}:{now.isoformat()}"
        changes = [
            Transition(segment.id, segment.version, c, ENTERED, now, cause)
            for c in sorted(matched - members)
        ] + [
            Transition(segment.id, segment.version, c, "exited", now, cause)
            for c in sorted(members - matched)
        ]
        applied = 0
        for start in range(0, len(changes), CHUNK):
            applied += await self._apply_fresh(segment.id, changes[start : start + CHUNK])
        return applied

    async def _apply_fresh(self, segment_id: str, changes: Sequence[Transition]) -> int:
        """Apply what still holds: real-time evaluation may have moved some of these
        customers since the member list was read (no second "entered")."""
        members = await self.store.members_among(segment_id, [t.customer_id for t in changes])
        still = [t for t in changes if (t.change == ENTERED) != (t.customer_id in members)]
        await self.apply(still)
        return len(still)

    async def _matching(
        self, segment: Segment, docs: Sequence[ProfileView], now: datetime
    ) -> set[str]:
        if not docs:
            return set()
        ids = [d["_id"] for d in docs]
        events = await self._events(ids, now) if segment.rule.uses_events else {}
        EVALUATIONS.inc(len(docs))
        return {d["_id"] for d in docs if segment.matches(d, events.get(d["_id"], []), now)}

    async def remove_customer(self, customer_id: str, cause: str) -> None:
        """Exit every segment the customer is in (merged away, or erased)."""
        current = await self.store.memberships_of([customer_id])
        now = self.clock()
        changes = [
            Transition(s, int(doc.get("segment_version", 1)), customer_id, "exited", now, cause)
            for s, doc in sorted(current.get(customer_id, {}).items())
        ]
        await self.apply(changes)

    async def merge(self, merged_id: str, survivor_id: str, cause: str) -> None:
        """A customer merged into another leaves its segments; its view goes and its events
        follow the survivor."""
        await self.remove_customer(merged_id, cause=cause)
        await self.store.move_customer(merged_id, survivor_id)

    async def save_profiles(self, views: Sequence[ProfileView]) -> None:
        """Keep the profile views rules read (before evaluating them)."""
        await self.store.save_profiles(views)

    async def save_events(self, records: Sequence[StoredEvent]) -> None:
        """Keep recent events for event conditions (before evaluating them)."""
        await self.store.save_events(records)

    # ---- the catalogue ----------------------------------------------------------------

    def reading(self, changed_paths: Iterable[str]) -> list[Segment]:
        """Segments a profile change to these paths can change."""
        return self.catalog.reading(changed_paths)

    def on_events(self, names: Iterable[str]) -> list[Segment]:
        """Segments whose event conditions read any of these events."""
        return self.catalog.on_events(names)

    def time_dependent(self) -> list[Segment]:
        """Segments whose members can change as time passes."""
        return self.catalog.time_dependent()

    def segment(self, segment_id: str) -> Segment | None:
        """The segment evaluated under this id, if any."""
        return self.catalog.get(segment_id)

    def segment_names(self) -> dict[str, str]:
        """The name of every segment evaluated, by id."""
        return self.catalog.names()

    def put(self, segment: Segment) -> None:
        """Evaluate this segment from now on (replacing one with its id)."""
        self.catalog.put(segment)

    def discard(self, segment_id: str) -> None:
        """Stop evaluating a segment."""
        self.catalog.discard(segment_id)

    def replace_all(self, segments: Iterable[Segment]) -> None:
        """Evaluate exactly these segments (the catalogue reloaded)."""
        self.catalog = Catalog(segments)

    async def exit_all(self, segment_id: str, version: int) -> int:
        """Every member leaves (the segment is deleted)."""
        members = [i async for i in self.store.member_ids(segment_id)]
        now = self.clock()
        cause = f"delete:{segment_id}:{version}"
        changes = [Transition(segment_id, version, c, "exited", now, cause) for c in members]
        for start in range(0, len(changes), CHUNK):
            await self.apply(changes[start : start + CHUNK])
        return len(changes)


def to_event(transition: Transition) -> events_pb2.SegmentMembershipChanged:
    """The Kafka payload of a transition."""
    event = events_pb2.SegmentMembershipChanged(
        event_id=transition.event_id,
        customer_id=transition.customer_id,
        segment_id=transition.segment_id,
        segment_version=transition.segment_version,
        change=_CHANGES[transition.change],
    )
    event.at.FromDatetime(transition.at)
    return event
