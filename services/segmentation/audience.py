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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus
from services.platform.mongo import Document
from services.segmentation.rule_query import prefilter, to_query
from services.segmentation.rules import EventRecord
from services.segmentation.segments import (
    ENTERED,
    Catalog,
    Segment,
    Transition,
    transitions,
)
from services.segmentation.store import SegmentationStore, membership_id

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


def _now() -> datetime:
    return datetime.now(UTC)


class Audiences:
    """Evaluates segments and keeps memberships and membership events in step."""

    def __init__(
        self,
        store: SegmentationStore,
        bus: Bus | None,
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
        views: Mapping[str, Document] | None = None,
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
        entered = [
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
        query = to_query(segment.rule, now)
        matched: set[str] = set()
        if query is not None:
            matched = {i async for i in self.store.matching_ids(query)}
            if progress is not None:
                await progress(total, total)
        else:
            evaluated = 0
            chunk: list[Document] = []
            # Only candidates: the rule's field conditions narrow the stream in the database.
            async for doc in self.store.stream_profiles(prefilter(segment.rule, now)):
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
        members = {i async for i in self.store.member_ids(segment.id)}
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
        self, segment: Segment, docs: Sequence[Document], now: datetime
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
