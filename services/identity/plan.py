"""What resolution reads from the stored graph and the writes it plans, as typed records; the
store (``store.py``) fills the one and applies the other, the resolver decides in between.

The resolver sees the store through :class:`GraphStore`, so this side holds no database code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.identity.graph import Conflict, CustomerNode, GraphIdentifier

# A stored customer's status.
ACTIVE, MERGED, ERASED = "active", "merged", "erased"


class ConcurrentChange(Exception):
    """Another replica changed the same part of the graph; resolve again from fresh state."""


@dataclass
class Loaded:
    """What the store found for a set of identifier keys."""

    owners: dict[str, str] = field(default_factory=dict)
    last_seen: dict[str, datetime] = field(default_factory=dict)
    customers: dict[str, CustomerNode] = field(default_factory=dict)
    # Merged customers whose identifiers still point at them, mapped to their survivor.
    redirects: dict[str, str] = field(default_factory=dict)

    def final(self, customer_id: str) -> str:
        """Follow merge redirects to the customer that holds the identifiers now."""
        while customer_id in self.redirects:
            customer_id = self.redirects[customer_id]
        return customer_id


@dataclass(frozen=True)
class NewIdentifier:
    """An identifier first seen: its normalised value, owner, source and time."""

    identifier: GraphIdentifier
    value: str
    customer_id: str
    source: str
    at: datetime


@dataclass(frozen=True)
class NewCustomer:
    """A customer to create; ``merged_into`` when the same batch merged it away."""

    customer_id: str
    created_at: datetime
    merged_into: str | None = None


@dataclass(frozen=True)
class Merge:
    """A merge to record and announce on ``identity.merged``."""

    merge_id: str
    survivor_id: str
    merged_ids: list[str]
    caused_by_event_id: str
    at: datetime


@dataclass(frozen=True)
class ConflictRecord:
    """An identifier the rules dropped from an event, for the audit trail."""

    event_id: str
    customer_id: str
    conflict: Conflict
    at: datetime


@dataclass
class Plan:
    """Every write one batch needs, applied by :meth:`GraphStore.apply`."""

    new_identifiers: list[NewIdentifier] = field(default_factory=list)
    new_customers: list[NewCustomer] = field(default_factory=list)
    # Stored customers a merge changes: expected version (checked and bumped).
    touched: dict[str, int] = field(default_factory=dict)
    # Stored customers that only gain identifiers: must still be active afterwards.
    grown: set[str] = field(default_factory=set)
    merged_into: dict[str, str] = field(default_factory=dict)
    moves: dict[str, list[str]] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    conflicts: list[ConflictRecord] = field(default_factory=list)


class GraphStore(Protocol):
    """The stored graph as resolution uses it."""

    def key_of(self, type_: str, value: str) -> GraphIdentifier:
        """The graph identifier of a normalised value (blind index for PII types)."""

    async def load_owners(self, keys: Iterable[str]) -> Loaded:
        """Who owns each of ``keys``, and when each was last seen."""

    async def load_customers(self, loaded: Loaded, wanted: set[str]) -> None:
        """Load ``wanted`` customers in full into ``loaded``, following merges."""

    async def apply(self, plan: Plan) -> None:
        """Write a plan; :class:`ConcurrentChange` when another replica got there first."""

    async def touch_last_seen(self, seen: Mapping[str, datetime]) -> None:
        """Move identifiers' last-seen forward (never back)."""
