"""Resolving events against the stored graph: load the part a batch touches, let the graph
decide, write the plan, and start again from fresh state if another replica changed the same
customers meanwhile. Used by the raw-event consumer and the ``Resolve`` RPC."""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from services.identity.graph import CustomerNode, Decision, GraphIdentifier, GraphView, needs_write
from services.identity.plan import (
    ConcurrentChange,
    ConflictRecord,
    GraphStore,
    Loaded,
    Merge,
    NewCustomer,
    NewIdentifier,
    Plan,
)
from services.identity.rules import IdentityRules
from services.platform.errors import InvalidArgument

log = logging.getLogger(__name__)

# An alias's previous id is taken as the first of these types it is already known under,
# else as the last: a user id stays a user id, an id never seen is an anonymous visitor's.
ALIAS_TYPES = ("user_id", "anonymous_id")

_MERGE_NAMESPACE = uuid.UUID("0c3e1f2a-8d4b-4e57-9a61-2b7f4c8d9e30")
MAX_ATTEMPTS = 8
# Identifiers whose last-seen time waits for the next flush, at most: while flushes fail the
# buffer keeps what they could not write, and must not grow without bound meanwhile.
MAX_BUFFERED_LAST_SEEN = 100_000

LAST_SEEN_DROPPED = Counter(
    "lodestar_identity_last_seen_dropped_total",
    "Buffered last-seen times dropped (the oldest) because the buffer was full",
)
MERGES = Counter(
    "lodestar_identity_merges_total",
    "Customer merges made (an event linked identifiers of two or more customers)",
)


@dataclass(frozen=True)
class EventIdentifiers:
    """One event's identifiers as they arrived: (type, raw value) pairs."""

    event_id: str
    raw: Sequence[tuple[str, str]]
    source: str
    at: datetime
    # An alias call's previousId, linked to the event's other identifiers (see ALIAS_TYPES).
    previous_id: str = ""

    def __post_init__(self) -> None:
        # MongoDB keeps milliseconds: decide on the same clock the stored graph will show.
        object.__setattr__(
            self, "at", self.at.replace(microsecond=self.at.microsecond // 1000 * 1000)
        )


@dataclass
class Outcome:
    """The customer each event resolved to, and the merges the batch made."""

    customer_ids: list[str] = field(default_factory=list)
    created: list[bool] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    conflicts: int = 0


@dataclass(frozen=True)
class _Prepared:
    event: EventIdentifiers
    identifiers: list[GraphIdentifier]
    values: dict[str, str]
    # The previous id's key under each of ALIAS_TYPES, and its value; empty when none.
    alias_keys: tuple[GraphIdentifier, ...] = ()
    alias_value: str = ""

    def with_alias(self, owners: Mapping[str, str]) -> _Prepared:
        """The event with its previous id added under the type it is known as (or the last
        of ALIAS_TYPES when unknown), a plain event then."""
        if not self.alias_keys:
            return self
        chosen = next((k for k in self.alias_keys if k.key in owners), self.alias_keys[-1])
        if chosen.key in self.values:
            return _Prepared(self.event, self.identifiers, self.values)
        return _Prepared(
            self.event,
            [*self.identifiers, chosen],
            {**self.values, chosen.key: self.alias_value},
        )


class Resolver:
    """Resolves batches of events to customers, safely under concurrent replicas."""

    def __init__(
        self,
        store: GraphStore,
        rules: IdentityRules,
        last_seen_resolution: timedelta = timedelta(hours=1),
        max_buffered_last_seen: int = MAX_BUFFERED_LAST_SEEN,
    ) -> None:
        self.store = store
        self.rules = rules
        self.last_seen_resolution = last_seen_resolution
        self.max_buffered_last_seen = max(1, max_buffered_last_seen)
        # Last-seen times waiting for the next flush: off the hot path, at most one write
        # per identifier per flush. A crash loses at most one flush interval of them.
        self._seen: dict[str, datetime] = {}

    async def flush_last_seen(self) -> int:
        """Write the buffered last-seen times; returns how many identifiers were touched.

        When the write fails (or is cancelled) the times stay buffered for the next flush,
        merged with those buffered meanwhile (the newest wins), and the error propagates.
        """
        pending, self._seen = self._seen, {}
        try:
            await self.store.touch_last_seen(pending)
        except BaseException:
            for key, at in pending.items():
                self._see(key, at)
            raise
        return len(pending)

    def _see(self, key: str, at: datetime) -> None:
        """Buffer ``at`` as the identifier's last seen unless a newer time is buffered."""
        buffered = self._seen.get(key)
        if buffered is None:
            self._seen[key] = at
            if len(self._seen) > self.max_buffered_last_seen:
                self._drop_oldest()
        elif at > buffered:
            self._seen[key] = at

    def _drop_oldest(self) -> None:
        """Cut a full buffer to nine tenths of its cap, dropping the oldest times (a tenth
        of headroom, so a full buffer is not sorted again for every identifier). A dropped
        identifier's stored last seen stays behind, so its next event buffers it again."""
        keep = self.max_buffered_last_seen - self.max_buffered_last_seen // 10
        excess = len(self._seen) - keep
        for key, _ in heapq.nsmallest(excess, self._seen.items(), key=lambda item: item[1]):
            del self._seen[key]
        LAST_SEEN_DROPPED.inc(excess)
        log.warning(
            "last-seen buffer full, dropped the oldest times",
            extra={"fields": {"dropped": excess, "kept": len(self._seen)}},
        )

    def prepare(self, event: EventIdentifiers) -> _Prepared:
        """Normalise and key an event's identifiers; blocked and invalid ones never link.

        Raises :class:`InvalidArgument` when nothing usable is left.
        """
        identifiers: dict[str, GraphIdentifier] = {}
        values: dict[str, str] = {}
        reasons = []
        for type_, raw in event.raw:
            try:
                value = self.rules.normalize(type_, raw)
            except InvalidArgument as exc:
                reasons.append(str(exc))
                continue
            if self.rules.is_blocked(value):
                reasons.append(f"{type_} is a blocked placeholder value")
                continue
            identifier = self.store.key_of(type_, value)
            identifiers[identifier.key] = identifier
            values[identifier.key] = value
        if not identifiers:
            detail = "; ".join(reasons) or "none given"
            raise InvalidArgument(f"event {event.event_id} has no usable identifier ({detail})")
        alias_keys: tuple[GraphIdentifier, ...] = ()
        previous = self._previous_id(event.previous_id)
        if previous:
            alias_keys = tuple(self.store.key_of(t, previous) for t in ALIAS_TYPES)
        return _Prepared(event, list(identifiers.values()), values, alias_keys, previous)

    def _previous_id(self, raw: str) -> str:
        """The normalised previous id of an alias, or ``""`` when there is none or it is
        unusable (blocked placeholder, empty, too long): then the call links nothing extra
        and still resolves by its other identifiers."""
        if not raw:
            return ""
        try:
            value = self.rules.normalize(ALIAS_TYPES[0], raw)
        except InvalidArgument:
            return ""
        return "" if self.rules.is_blocked(value) else value

    async def resolve(self, events: Sequence[EventIdentifiers]) -> Outcome:
        """Resolve a batch in order; on a lost race, one event at a time from fresh state."""
        outcome = await self._resolve([self.prepare(e) for e in events])
        # Counted once stored: an event handled again finds the merge made, makes none.
        MERGES.inc(len(outcome.merges))
        return outcome

    async def _resolve(self, prepared: list[_Prepared]) -> Outcome:
        try:
            return await self._attempt(prepared)
        except ConcurrentChange:
            if len(prepared) == 1:
                return await self._retry_one(prepared[0])
        outcome = Outcome()
        for item in prepared:
            single = await self._retry_one(item)
            outcome.customer_ids += single.customer_ids
            outcome.created += single.created
            outcome.merges += single.merges
            outcome.conflicts += single.conflicts
        return outcome

    async def _retry_one(self, item: _Prepared) -> Outcome:
        for attempt in range(MAX_ATTEMPTS):
            try:
                return await self._attempt([item])
            except ConcurrentChange as exc:
                log.info(
                    "identity race lost, resolving again",
                    extra={
                        "fields": {
                            "event_id": item.event.event_id,
                            "attempt": attempt + 1,
                            "why": str(exc),
                        }
                    },
                )
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311
        raise ConcurrentChange(f"event {item.event.event_id}: gave up after {MAX_ATTEMPTS} races")

    async def _attempt(self, prepared: list[_Prepared]) -> Outcome:
        wanted = [i.key for p in prepared for i in (*p.identifiers, *p.alias_keys)]
        loaded = await self.store.load_owners(wanted)
        # Each attempt decides afresh what an alias's previous id is known as.
        prepared = [p.with_alias(loaded.owners) for p in prepared]
        used = {i.key for p in prepared for i in p.identifiers}
        for key in set(loaded.owners) - used:
            # A previous id's other candidate type: looked up, not part of any event.
            del loaded.owners[key]
            loaded.last_seen.pop(key, None)
        # Only events that could change the graph (something new, or several owners) need
        # their customers in full; the rest just read who owns their identifiers.
        changing = {
            owner
            for p in prepared
            if len(owners := {loaded.owners.get(i.key) for i in p.identifiers}) > 1
            for owner in owners
            if owner is not None
        }
        await self.store.load_customers(loaded, changing)
        view = self._view(loaded)
        decisions = [view.resolve(p.event.event_id, p.identifiers, p.event.at) for p in prepared]
        plan, outcome = self._plan(prepared, decisions, loaded)
        await self.store.apply(plan)
        return outcome

    def _view(self, loaded: Loaded) -> GraphView:
        view = GraphView(self.rules)
        for node in loaded.customers.values():
            view.add_customer(node)
        for key, owner in loaded.owners.items():
            final = loaded.final(owner)
            if final not in view.customers:
                # Owner of identifiers this batch only reads: never merged or grown here.
                view.add_customer(CustomerNode(final, datetime.max.replace(tzinfo=UTC), -1))
            view.customers[final].identifiers.setdefault(
                key, GraphIdentifier(key.split(":", 1)[0], key)
            )
            view.add_owner(key, final)
        return view

    def _plan(
        self,
        prepared: list[_Prepared],
        decisions: list[Decision],
        loaded: Loaded,
    ) -> tuple[Plan, Outcome]:
        plan = Plan()
        survivor_of = {m: d.customer_id for d in decisions for m in d.merged}

        def final(customer_id: str) -> str:
            while customer_id in survivor_of:
                customer_id = survivor_of[customer_id]
            return customer_id

        outcome = Outcome(
            customer_ids=[final(d.customer_id) for d in decisions],
            created=[d.created and final(d.customer_id) == d.customer_id for d in decisions],
        )
        for item, decision in zip(prepared, decisions, strict=True):
            self._plan_event(
                plan,
                outcome=outcome,
                item=item,
                decision=decision,
                loaded=loaded,
                owner=final(decision.customer_id),
            )
            if decision.attached or decision.merged:
                self._touch(plan, decision, loaded, final)
        for item, decision in zip(prepared, decisions, strict=True):
            if decision.created:
                survivor = final(decision.customer_id)
                plan.new_customers.append(
                    NewCustomer(
                        decision.customer_id,
                        item.event.at,
                        None if survivor == decision.customer_id else survivor,
                    )
                )
        for customer_id, node in loaded.customers.items():
            if node.is_new:
                # Healed: its identifiers were stored before it (a crash in between).
                plan.new_customers.append(NewCustomer(customer_id, node.created_at))
        # Identifiers still pointing at customers merged earlier (a crash or a race between
        # the two steps of a merge) move to the survivor now.
        for stale in loaded.redirects:
            plan.moves.setdefault(final(loaded.final(stale)), []).append(stale)
        return plan, outcome

    def _plan_event(
        self,
        plan: Plan,
        *,
        outcome: Outcome,
        item: _Prepared,
        decision: Decision,
        loaded: Loaded,
        owner: str,
    ) -> None:
        at = item.event.at
        for identifier in decision.attached:
            plan.new_identifiers.append(
                NewIdentifier(identifier, item.values[identifier.key], owner, item.event.source, at)
            )
        for identifier in item.identifiers:
            last = loaded.last_seen.get(identifier.key)
            if last is not None and needs_write(last, at, self.last_seen_resolution):
                self._see(identifier.key, at)
        for conflict in decision.conflicts:
            plan.conflicts.append(ConflictRecord(item.event.event_id, owner, conflict, at))
        outcome.conflicts += len(decision.conflicts)
        if decision.merged:
            self._record_merge(plan, outcome, decision, owner, at)

    @staticmethod
    def _record_merge(
        plan: Plan, outcome: Outcome, decision: Decision, survivor: str, at: datetime
    ) -> None:
        merge = Merge(
            merge_id=str(uuid.uuid5(_MERGE_NAMESPACE, f"{decision.event_id}:{survivor}")),
            survivor_id=survivor,
            merged_ids=list(decision.merged),
            caused_by_event_id=decision.event_id,
            at=at,
        )
        outcome.merges.append(merge)
        plan.merges.append(merge)

    @staticmethod
    def _touch(plan: Plan, decision: Decision, loaded: Loaded, final: Callable[[str], str]) -> None:
        """Record the stored customers a decision changes: merge participants are
        version-checked, customers that only gain identifiers are checked to be active."""
        survivor = final(decision.customer_id)
        for customer_id in [decision.customer_id, *decision.merged]:
            node = loaded.customers.get(customer_id)
            if node is None or node.is_new:
                continue  # created by this batch: nobody else can have changed it yet
            if not decision.merged:
                plan.grown.add(customer_id)
                continue
            plan.touched.setdefault(customer_id, node.version)
            if customer_id != survivor:
                plan.merged_into[customer_id] = survivor
                plan.moves.setdefault(survivor, []).append(customer_id)
