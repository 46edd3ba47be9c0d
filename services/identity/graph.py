"""The identity graph's resolution, as pure logic over an in-memory view of the part of the
graph an event touches.

Identifiers here are opaque keys (for e-mail and phone a keyed blind index, never the clear
value). An event's identifiers map to zero customers (a new customer), one (new identifiers
are attached) or several (they merge into the oldest, the survivor). Where an attach or merge
would break a per-type limit, or combine more customers than allowed, the weakest conflicting
identifier is dropped from the linking set, the conflict is recorded, and the rest resolves.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.identity.rules import IdentityRules

# Customer ids derive from the event that created the customer, so a redelivered event that
# creates a customer creates the same one.
_CUSTOMER_NAMESPACE = uuid.UUID("3f8a1c52-6a4e-4f0b-9a7d-5b7e0c9d2e11")


def new_customer_id(event_id: str, identifier_keys: Iterable[str]) -> str:
    """The id of the customer an event creates.

    It derives from the event id *and* the event's identifier keys: a redelivery (same id,
    same identifiers) creates the same customer, while another event reusing a known id
    (event ids come from clients' message ids) cannot land in that customer.
    """
    keys = "\n".join(sorted(set(identifier_keys)))
    return str(uuid.uuid5(_CUSTOMER_NAMESPACE, f"{event_id}\n{keys}"))


@dataclass(frozen=True, order=True)
class GraphIdentifier:
    """An identifier as the graph sees it: its type and its storage key."""

    type: str
    key: str


@dataclass
class CustomerNode:
    """A customer in the view: when it was created, its version, its identifiers."""

    customer_id: str
    created_at: datetime
    version: int = 0
    identifiers: dict[str, GraphIdentifier] = field(default_factory=dict)
    is_new: bool = False

    def counts(self) -> Counter[str]:
        """Identifiers held per type."""
        return Counter(i.type for i in self.identifiers.values())


@dataclass(frozen=True)
class Conflict:
    """An identifier dropped from an event's linking set, and why."""

    identifier: GraphIdentifier
    reason: str


@dataclass(frozen=True)
class Decision:
    """What resolving one event did."""

    event_id: str
    customer_id: str
    created: bool
    attached: list[GraphIdentifier]
    merged: list[str]
    conflicts: list[Conflict]


class GraphView:
    """The owners of the identifiers a batch touches, and those customers in full.

    ``resolve`` updates the view, so later events of a batch see what earlier ones did.
    """

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules
        self.owners: dict[str, str] = {}
        self.customers: dict[str, CustomerNode] = {}

    def add_customer(self, node: CustomerNode) -> None:
        """Load a stored customer and its identifiers."""
        self.customers[node.customer_id] = node
        for key in node.identifiers:
            self.owners[key] = node.customer_id

    def add_owner(self, key: str, customer_id: str) -> None:
        """Load a stored ownership whose customer is not loaded in full."""
        self.owners[key] = customer_id

    def owner(self, key: str) -> str | None:
        """The customer that holds ``key`` in the view."""
        return self.owners.get(key)

    def order(self, identifiers: Sequence[GraphIdentifier]) -> list[GraphIdentifier]:
        """Strongest first; ties by key, so the order is the same on every replica."""
        return sorted(set(identifiers), key=lambda i: (self.rules.rank(i.type), i.key))

    def resolve(
        self, event_id: str, identifiers: Sequence[GraphIdentifier], at: datetime
    ) -> Decision:
        """Resolve one event; ``identifiers`` are normalised and unblocked."""
        linking = self.order(identifiers)
        conflicts: list[Conflict] = []
        while True:
            problem = self._violation(linking)
            if problem is None:
                break
            dropped, reason = problem
            for identifier in dropped:
                linking.remove(identifier)
                conflicts.append(Conflict(identifier, reason))
        owners = self._owners_of(linking)
        if not owners:
            node = CustomerNode(
                new_customer_id(event_id, (i.key for i in identifiers)), at, is_new=True
            )
            self.customers[node.customer_id] = node
            survivor, merged, created = node, [], True
        else:
            nodes = sorted((self.customers[c] for c in owners), key=_age)
            survivor, merged, created = nodes[0], [n.customer_id for n in nodes[1:]], False
            for other in nodes[1:]:
                self._fold(other, survivor)
        attached = [i for i in linking if self.owner(i.key) is None]
        for identifier in attached:
            survivor.identifiers[identifier.key] = identifier
            self.owners[identifier.key] = survivor.customer_id
        return Decision(event_id, survivor.customer_id, created, attached, merged, conflicts)

    def _owners_of(self, linking: Sequence[GraphIdentifier]) -> list[str]:
        found: list[str] = []
        for identifier in linking:
            owner = self.owner(identifier.key)
            if owner is not None and owner not in found:
                found.append(owner)
        return found

    def _violation(
        self, linking: list[GraphIdentifier]
    ) -> tuple[list[GraphIdentifier], str] | None:
        """What to drop and why, or ``None`` when the plan is allowed.

        The candidates are the new identifiers of the offending type and, for each customer
        that brings it, all the event's links to that customer (dropping only some links
        would detach nothing). The weakest candidate goes: lowest priority, new identifiers
        before links to existing customers, then by key so every replica agrees.
        """
        owners = self._owners_of(linking)
        if len(owners) > self.rules.max_customers_per_event:
            reason = f"would merge more than {self.rules.max_customers_per_event} customers"
            return self._weakest(linking, owners, new_type=None), reason
        nodes = [self.customers[c] for c in owners]
        new = [i for i in linking if self.owner(i.key) is None]
        total = Counter(i.type for i in new)
        for node in nodes:
            total.update(node.counts())
        for type_, count in sorted(total.items(), key=lambda kv: self.rules.rank(kv[0])):
            # A customer already above a lowered limit may keep what it has, not grow.
            allowed = max([self.rules.limit(type_), *(n.counts()[type_] for n in nodes)])
            if count > allowed:
                holders = [n.customer_id for n in nodes if n.counts()[type_] > 0]
                reason = f"limit of {self.rules.limit(type_)} {type_} per customer"
                return self._weakest(linking, holders, new_type=type_), reason
        return None

    def _weakest(
        self, linking: list[GraphIdentifier], owners: Sequence[str], new_type: str | None
    ) -> list[GraphIdentifier]:
        candidates: list[tuple[tuple[int, int, str], list[GraphIdentifier]]] = []
        for identifier in linking:
            if self.owner(identifier.key) is None and identifier.type == new_type:
                candidates.append(
                    ((self.rules.rank(identifier.type), 1, identifier.key), [identifier])
                )
        for owner in owners:
            links = [i for i in linking if self.owner(i.key) == owner]
            strongest = links[0]  # linking is ordered strongest first
            candidates.append(((self.rules.rank(strongest.type), 0, strongest.key), links))
        return max(candidates)[1]

    def _fold(self, merged: CustomerNode, survivor: CustomerNode) -> None:
        for key, identifier in merged.identifiers.items():
            survivor.identifiers[key] = identifier
            self.owners[key] = survivor.customer_id
        del self.customers[merged.customer_id]


def _age(node: CustomerNode) -> tuple[datetime, str]:
    return node.created_at, node.customer_id


def needs_write(last_seen: datetime | None, seen_at: datetime, resolution: timedelta) -> bool:
    """Whether an identifier's last-seen must be rewritten: at most once per ``resolution``,
    so a busy customer costs one write per identifier per interval, not one per event."""
    return last_seen is None or seen_at - last_seen >= resolution
