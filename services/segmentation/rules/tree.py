"""The parsed form of a segment rule: an immutable tree of conditions, the compiled
:class:`Rule` that evaluates it, and its canonical JSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.segmentation.rules.fields import FieldKind

# The document rules read: this service's view of one profile (see the consumers).
ProfileView = Mapping[str, Any]
# A condition's validated value: one scalar, or a tuple of them for ``in`` and ``between``.
Scalar = str | int | float | bool | datetime
Operand = Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class EventRecord:
    """One of a customer's recent events, as event conditions read it."""

    name: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


def days_of(value: Operand) -> float:
    """The day count of a ``within_last_days`` condition (a number once parsed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"within_last_days holds {type(value).__name__}, not a number")
    return value


def items_of(value: Operand) -> tuple[Scalar, ...]:
    """The values of an ``in`` or ``between`` condition (a tuple once parsed)."""
    if not isinstance(value, tuple):
        raise TypeError(f"in/between holds {type(value).__name__}, not a tuple")
    return value


# --- the parsed tree ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldCondition:
    """A test of one profile field, e.g. ``orders.revenue gt 500``.

    ``keys`` is where the field is stored (trait and event names escaped as the profile
    service stores them); for a personal trait it is ``("traits_present",)``.
    """

    field: str
    op: str
    value: Operand
    kind: FieldKind
    keys: tuple[str, ...]

    @property
    def trait(self) -> str:
        """The trait name of a ``traits.<name>`` field."""
        return self.field.removeprefix("traits.")


@dataclass(frozen=True)
class PropertyCondition:
    """A test of one top-level property of an event (any JSON value, like a trait)."""

    property: str
    op: str
    value: Operand


@dataclass(frozen=True)
class CountBound:
    """How many matching events qualify: ``count {"gte": 3}``."""

    op: str
    n: int


@dataclass(frozen=True)
class FollowUp:
    """The event whose absence makes a sequence: an anchor event at time t qualifies once
    ``now >= t + within_hours`` and no follow-up event (matching ``where``) happened in the
    closed interval ``[t, t + within_hours]``. An anchor younger than ``within_hours`` is
    undecided and does not qualify yet. When the follow-up is the anchor's own event name,
    the anchor itself does not count as its follow-up."""

    event: str
    where: tuple[PropertyCondition, ...]
    within_hours: float


@dataclass(frozen=True)
class EventCondition:
    """Performed ``event`` (every ``where`` holding on its properties) a number of times
    within the last ``within_last_days`` days (all recent events when None). With
    ``not_followed_by``, only anchors without their follow-up are counted."""

    event: str
    where: tuple[PropertyCondition, ...]
    count: CountBound
    within_last_days: float | None
    not_followed_by: FollowUp | None


@dataclass(frozen=True)
class AllOf:
    """Every rule holds."""

    rules: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one rule holds."""

    rules: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The rule does not hold."""

    rule: Node


Node = FieldCondition | EventCondition | AllOf | AnyOf | Not
ProfileTest = Callable[[Mapping[str, Any], Sequence[EventRecord], datetime], bool]
ValueTest = Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    """A validated segment rule, compiled for evaluation. Build with :func:`parse`."""

    root: Node
    paths: frozenset[str] = field(compare=False)
    event_names: frozenset[str] = field(compare=False)
    time_dependent: bool = field(compare=False)
    uses_events: bool = field(compare=False)
    compiled: ProfileTest = field(compare=False, repr=False)

    def matches(
        self, profile: Mapping[str, Any], events: Sequence[EventRecord], now: datetime
    ) -> bool:
        """Whether the customer (segmentation profile document and recent events) is in the
        audience at ``now`` (naive times are taken as UTC)."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return self.compiled(profile, events, now)

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON of the rule (defaults made explicit, times in ISO 8601)."""
        return node_json(self.root)


def walk(node: Node) -> Iterator[Node]:
    """The node and every node below it, depth first, in document order."""
    yield node
    if isinstance(node, AllOf | AnyOf):
        for child in node.rules:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.rule)


def aware(moment: datetime) -> datetime:
    """A time with its zone (naive times are taken as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- canonical JSON ----------------------------------------------------------------------------


def node_json(node: Node) -> dict[str, Any]:
    """The canonical JSON of a node (defaults made explicit, times in ISO 8601)."""
    if isinstance(node, AllOf):
        return {"all": [node_json(n) for n in node.rules]}
    if isinstance(node, AnyOf):
        return {"any": [node_json(n) for n in node.rules]}
    if isinstance(node, Not):
        return {"not": node_json(node.rule)}
    if isinstance(node, FieldCondition):
        return {"field": node.field, "op": node.op, "value": _value_json(node.value)}
    out: dict[str, Any] = {"event": node.event}
    if node.where:
        out["where"] = _where_json(node.where)
    out["count"] = {node.count.op: node.count.n}
    if node.within_last_days is not None:
        out["within_last_days"] = node.within_last_days
    if node.not_followed_by is not None:
        follow = node.not_followed_by
        out["not_followed_by"] = {"event": follow.event}
        if follow.where:
            out["not_followed_by"]["where"] = _where_json(follow.where)
        out["not_followed_by"]["within_hours"] = follow.within_hours
    return out


def _where_json(where: tuple[PropertyCondition, ...]) -> list[dict[str, Any]]:
    return [{"field": c.property, "op": c.op, "value": _value_json(c.value)} for c in where]


def _value_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_value_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value
