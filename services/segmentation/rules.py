"""Segment rules: the JSON language audiences are defined in, validated and compiled once.

A rule is parsed into an immutable tree (:class:`Rule`) that compiles, at parse time, into
closures, so :meth:`Rule.matches` costs microseconds per profile change. The same tree is
pushed down to MongoDB for backfills (:mod:`services.segmentation.rule_query`).

Semantics, shared by ``matches`` and the MongoDB filter:

- A field that is missing or null has no value: every test of it is false, except ``ne``
  (true: ``ne`` is exactly ``not eq``) and ``exists false``. Counters (``event_counts.*``,
  ``orders.count``, ``engagement.*.count``, ``behaviour.session_count``) read 0 instead, so
  ``event_counts.Order Completed lt 1`` finds the customers who never ordered.
- Values compare within their type only: a number never equals or exceeds text, ``true`` is
  not 1, and a list is never equal to, greater or less than anything (test lists with
  ``contains``). Numbers compare across int and float.
- ``contains`` is a case-sensitive substring test on text, and an element test on lists.
- ``within_last_days N`` holds for a time at or after ``now - N days`` (later times, such as
  clock skew, count too).
- PII traits are tested with ``exists`` only, against ``traits_present``.
- Event conditions count the matching events in the window; see :class:`EventCondition` and
  :class:`FollowUp` for "did not perform X within H hours after Y".
"""

from __future__ import annotations

import json
import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Final

from services.platform.fieldnames import field_key
from services.platform.pii import PII_TRAITS
from services.platform.validation import json_nesting_exceeds
from services.profile.engagement import ENGAGEMENT_EVENTS, PURPOSES, STATES

DEFAULT_PII: Final = PII_TRAITS
MAX_DEPTH: Final = 10
# JSON nesting of a rule's text: room for MAX_DEPTH rules (two levels each through all/any)
# and their conditions, far short of what would exhaust the parser's stack.
MAX_JSON_DEPTH: Final = 64
MAX_CONDITIONS: Final = 200
MAX_LIST: Final = 1_000
MAX_TEXT: Final = 1_000
MAX_DAYS: Final = 36_500
MAX_HOURS: Final = 24 * 366
_INT64: Final = 2**63

OPERATORS: Final = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "contains",
    "exists",
    "between",
    "within_last_days",
)
COUNT_OPERATORS: Final = ("gte", "lte", "eq", "gt", "lt")
_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_COUNT_BOUND: Final[dict[str, Callable[[Any, Any], bool]]] = {**_ORDER, "eq": operator.eq}
_KINDS: Final = ("all", "any", "not", "field", "event")


class FieldKind(Enum):
    """What a profile field holds, which decides the operators and values it accepts."""

    NUMBER = "a number"
    COUNTER = "a count"
    TEXT = "text"
    DATETIME = "a date and time"
    FLAG = "true or false"
    TEXT_LIST = "a list of text"
    CONSENT = "a consent state"
    ANY = "any value"
    PERSONAL = "personal data"


_NUMERIC_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "between", "exists")
ALLOWED_OPS: Final[dict[FieldKind, tuple[str, ...]]] = {
    FieldKind.NUMBER: _NUMERIC_OPS,
    FieldKind.COUNTER: _NUMERIC_OPS,
    FieldKind.TEXT: ("eq", "ne", "in", "contains", "exists"),
    FieldKind.DATETIME: ("gt", "gte", "lt", "lte", "between", "within_last_days", "exists"),
    FieldKind.FLAG: ("eq", "ne", "exists"),
    FieldKind.TEXT_LIST: ("contains", "exists"),
    FieldKind.CONSENT: ("eq", "ne", "in", "exists"),
    FieldKind.ANY: tuple(op for op in OPERATORS if op != "within_last_days"),
    FieldKind.PERSONAL: ("exists",),
}

_N, _C, _T, _D = FieldKind.NUMBER, FieldKind.COUNTER, FieldKind.TEXT, FieldKind.DATETIME
FIXED_FIELDS: Final[dict[str, FieldKind]] = {
    "first_seen": _D,
    "last_seen": _D,
    "orders.count": _C,
    "orders.revenue": _N,
    "orders.average_order_value": _N,
    "orders.first_order_at": _D,
    "orders.last_order_at": _D,
    "loyalty.tier": _T,
    "loyalty.points": _N,
    "loyalty.points_redeemed": _N,
    "loyalty.cashback_balance": _N,
    "loyalty.spend_last_12_months": _N,
    "loyalty.purchases_last_12_months": _N,
    "loyalty.tier_since": _D,
    "behaviour.session_count": _C,
    "behaviour.last_active_at": _D,
    "behaviour.cart_open": FieldKind.FLAG,
    "behaviour.cart_updated_at": _D,
    "behaviour.channels": FieldKind.TEXT_LIST,
    "behaviour.sources": FieldKind.TEXT_LIST,
    "behaviour.devices": FieldKind.TEXT_LIST,
    "behaviour.last_page": _T,
    "behaviour.last_screen": _T,
    "scores.recency": _N,
    "scores.frequency": _N,
    "scores.monetary": _N,
    "scores.rfm_cell": _T,
    "scores.p_alive": _N,
    "scores.expected_purchases_30d": _N,
    "scores.expected_purchases_90d": _N,
    "scores.clv_12m": _N,
    **{f"consent.{purpose}": FieldKind.CONSENT for purpose in PURPOSES},
    **{f"engagement.{kind}.count": _C for kind in ENGAGEMENT_EVENTS},
    **{f"engagement.{kind}.last_at": _D for kind in ENGAGEMENT_EVENTS},
}
# Profile paths at the granularity profile-change events announce them.
_NAMED_FAMILIES = ("traits", "event_counts")


class RuleError(ValueError):
    """A rule a marketer must fix: ``path`` points at the bad part (``rule.all[1].value``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def json_path(path: str) -> str:
    """A rule error's path as a JSON path of the rule itself: ``rule.all[1]`` -> ``$.all[1]``."""
    head, _, rest = path.partition("rule")
    if head or (rest and rest[0] not in ".["):
        return "$"
    return "$" + rest


@dataclass(frozen=True)
class EventRecord:
    """One of a customer's recent events, as event conditions read it."""

    name: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


# --- the parsed tree ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldCondition:
    """A test of one profile field, e.g. ``orders.revenue gt 500``.

    ``keys`` is where the field is stored (trait and event names escaped as the profile
    service stores them); for a personal trait it is ``("traits_present",)``.
    """

    field: str
    op: str
    value: Any
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
    value: Any


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
        return _node_json(self.root)


def parse(rule: Any, pii_traits: frozenset[str] = DEFAULT_PII) -> Rule:
    """Validate a JSON rule and compile it; raises :class:`RuleError` naming the first
    problem found (depth first, in document order)."""
    root = _Parser(pii_traits).rule(rule, "rule", 1)
    nodes = list(_walk(root))
    fields = [n for n in nodes if isinstance(n, FieldCondition)]
    events = [n for n in nodes if isinstance(n, EventCondition)]
    names = {e.event for e in events} | {
        e.not_followed_by.event for e in events if e.not_followed_by is not None
    }
    return Rule(
        root=root,
        paths=frozenset(_announced_path(f.field) for f in fields),
        event_names=frozenset(names),
        time_dependent=any(f.op == "within_last_days" for f in fields)
        or any(e.within_last_days is not None or e.not_followed_by is not None for e in events),
        uses_events=bool(events),
        compiled=_compile(root),
    )


def load(rule_json: str) -> Any:
    """The JSON value of a rule's text; :class:`RuleError` when it is not JSON or nests
    deeper than :data:`MAX_JSON_DEPTH` (checked first, without recursion)."""
    if json_nesting_exceeds(rule_json, MAX_JSON_DEPTH):
        raise RuleError(
            "rule",
            f"nests deeper than {MAX_JSON_DEPTH} levels of JSON; rules nest at most "
            f"{MAX_DEPTH} deep",
        )
    try:
        return json.loads(rule_json)
    except ValueError as exc:
        raise RuleError("rule", f"not valid JSON: {exc}") from None


def _walk(node: Node) -> Any:
    yield node
    if isinstance(node, AllOf | AnyOf):
        for child in node.rules:
            yield from _walk(child)
    elif isinstance(node, Not):
        yield from _walk(node.rule)


def _announced_path(path: str) -> str:
    head = path.split(".", 1)[0]
    return path if head in _NAMED_FAMILIES else head


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- validation --------------------------------------------------------------------------------


class _Parser:
    """One parse: the PII set and the running condition count."""

    def __init__(self, pii_traits: frozenset[str]) -> None:
        self.pii = pii_traits
        self.conditions = 0

    def rule(self, raw: Any, path: str, depth: int) -> Node:
        if not isinstance(raw, Mapping):
            raise RuleError(
                path, 'a rule is an object, e.g. {"field": ..., "op": ..., "value": ...}'
            )
        if depth > MAX_DEPTH:
            raise RuleError(path, f"rules nest more than {MAX_DEPTH} deep; flatten them")
        kinds = [k for k in _KINDS if k in raw]
        if not kinds:
            raise RuleError(path, "a rule needs one of all, any, not, field or event")
        if len(kinds) > 1:
            raise RuleError(
                path,
                "a rule is exactly one of all, any, not, field or event; "
                f"this one has {' and '.join(kinds)}",
            )
        kind = kinds[0]
        if kind in ("all", "any"):
            _only(raw, (kind,), path, f"{kind} takes only its list of rules")
            items = raw[kind]
            if not isinstance(items, list) or not items:
                raise RuleError(f"{path}.{kind}", f"{kind} needs a non-empty list of rules")
            children = tuple(
                self.rule(item, f"{path}.{kind}[{i}]", depth + 1) for i, item in enumerate(items)
            )
            return AllOf(children) if kind == "all" else AnyOf(children)
        if kind == "not":
            _only(raw, ("not",), path, "not takes only the rule it negates")
            return Not(self.rule(raw["not"], f"{path}.not", depth + 1))
        if kind == "field":
            return self.field_condition(raw, path)
        return self.event_condition(raw, path)

    def count_one(self, path: str) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise RuleError(path, f"a rule holds at most {MAX_CONDITIONS} conditions")

    def field_condition(self, raw: Mapping[str, Any], path: str) -> FieldCondition:
        self.count_one(path)
        _only(raw, ("field", "op", "value"), path, "a field condition takes field, op and value")
        name = raw["field"]
        kind, keys = self.field_kind(name, f"{path}.field")
        if "op" not in raw:
            raise RuleError(path, "the condition needs an op, e.g. eq")
        op = _operator(raw, path, OPERATORS)
        if op not in ALLOWED_OPS[kind]:
            if kind is FieldKind.PERSONAL:
                raise RuleError(
                    f"{path}.op",
                    f"trait {name.removeprefix('traits.')!r} is personal data: "
                    "only exists can test it",
                )
            raise RuleError(
                f"{path}.op",
                f"{op} does not apply to {name} ({kind.value}); use {', '.join(ALLOWED_OPS[kind])}",
            )
        if "value" not in raw:
            raise RuleError(path, f"the condition needs a value for {op}")
        value = _operand(kind, op, raw["value"], f"{path}.value")
        return FieldCondition(name, op, value, kind, keys)

    def field_kind(self, name: Any, path: str) -> tuple[FieldKind, tuple[str, ...]]:
        if not isinstance(name, str) or not name:
            raise RuleError(path, "field must be a profile path such as orders.revenue")
        if name in FIXED_FIELDS:
            return FIXED_FIELDS[name], tuple(name.split("."))
        head, _, rest = name.partition(".")
        if head in _NAMED_FAMILIES and rest and "\x00" not in rest:
            if head == "event_counts":
                return FieldKind.COUNTER, (head, field_key(rest))
            if rest in self.pii:
                return FieldKind.PERSONAL, ("traits_present",)
            return FieldKind.ANY, (head, field_key(rest))
        raise RuleError(
            path,
            f"unknown field {name!r}; fields are traits.<name>, event_counts.<event name>, "
            "first_seen, last_seen, consent.<purpose>, engagement.<kind>.count|last_at and "
            "the fields of orders, loyalty, behaviour and scores",
        )

    def event_condition(self, raw: Mapping[str, Any], path: str) -> EventCondition:
        self.count_one(path)
        _only(
            raw,
            ("event", "where", "count", "within_last_days", "not_followed_by"),
            path,
            "an event condition takes event, where, count, within_last_days and not_followed_by",
        )
        name = _event_name(raw["event"], f"{path}.event")
        where = self.where(raw.get("where"), f"{path}.where")
        count = _count(raw.get("count", {"gte": 1}), f"{path}.count")
        window = None
        if "within_last_days" in raw:
            window = _positive(raw["within_last_days"], MAX_DAYS, f"{path}.within_last_days")
        follow = None
        if "not_followed_by" in raw:
            follow = self.follow_up(raw["not_followed_by"], f"{path}.not_followed_by")
        return EventCondition(name, where, count, window, follow)

    def follow_up(self, raw: Any, path: str) -> FollowUp:
        if not isinstance(raw, Mapping):
            raise RuleError(path, 'not_followed_by is {"event": ..., "within_hours": ...}')
        _only(raw, ("event", "where", "within_hours"), path, "takes event, where, within_hours")
        name = _event_name(raw.get("event"), f"{path}.event")
        where = self.where(raw.get("where"), f"{path}.where")
        if "within_hours" not in raw:
            raise RuleError(path, "not_followed_by needs within_hours")
        hours = _positive(raw["within_hours"], MAX_HOURS, f"{path}.within_hours")
        return FollowUp(name, where, hours)

    def where(self, raw: Any, path: str) -> tuple[PropertyCondition, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise RuleError(path, "where is a list of property conditions")
        out = []
        for i, item in enumerate(raw):
            here = f"{path}[{i}]"
            if not isinstance(item, Mapping):
                raise RuleError(here, 'a property condition is {"field", "op", "value"}')
            self.count_one(here)
            _only(item, ("field", "op", "value"), here, "takes field, op and value")
            name = item.get("field")
            if not isinstance(name, str) or not name:
                raise RuleError(f"{here}.field", "field must name an event property")
            if "op" not in item:
                raise RuleError(here, "the condition needs an op, e.g. eq")
            op = _operator(item, here, ALLOWED_OPS[FieldKind.ANY])
            if "value" not in item:
                raise RuleError(here, f"the condition needs a value for {op}")
            out.append(
                PropertyCondition(
                    name, op, _operand(FieldKind.ANY, op, item["value"], f"{here}.value")
                )
            )
        return tuple(out)


def _only(raw: Mapping[str, Any], allowed: tuple[str, ...], path: str, hint: str) -> None:
    for key in raw:
        if key not in allowed:
            raise RuleError(f"{path}.{key}", f"unknown key {key!r}; {hint}")


def _operator(raw: Mapping[str, Any], path: str, allowed: Sequence[str]) -> str:
    op = raw.get("op")
    if op not in allowed:
        raise RuleError(f"{path}.op", f"unknown operator {op!r}; use one of {', '.join(allowed)}")
    return str(op)


def _event_name(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RuleError(path, "event must be an event name such as 'Order Completed'")
    return raw


def _count(raw: Any, path: str) -> CountBound:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise RuleError(path, 'count is one bound, e.g. {"gte": 3}')
    ((op, n),) = raw.items()
    if op not in COUNT_OPERATORS:
        raise RuleError(f"{path}.{op}", f"unknown count bound; use {', '.join(COUNT_OPERATORS)}")
    if not _is_number(n) or not _finite(n) or n != int(n) or not 0 <= n <= _INT64 - 1:
        raise RuleError(f"{path}.{op}", "count must be a whole number, 0 or more")
    return CountBound(op, int(n))


def _positive(raw: Any, limit: float, path: str) -> float:
    if not _is_number(raw) or not 0 < raw <= limit:
        raise RuleError(path, f"must be a number greater than 0 and at most {limit:,}")
    return raw  # type: ignore[no-any-return]


def _operand(kind: FieldKind, op: str, raw: Any, path: str) -> Any:
    """The validated value of a condition, as matching uses it (lists become tuples)."""
    if op == "exists":
        if not isinstance(raw, bool):
            raise RuleError(path, "exists takes true or false")
        return raw
    if op == "within_last_days":
        return _positive(raw, MAX_DAYS, path)
    if op == "in":
        if not isinstance(raw, list) or not raw or len(raw) > MAX_LIST:
            raise RuleError(path, f"in takes a list of 1 to {MAX_LIST:,} values")
        return tuple(_single(kind, "eq", item, f"{path}[{i}]") for i, item in enumerate(raw))
    if op == "between":
        if not isinstance(raw, list) or len(raw) != 2:
            raise RuleError(path, "between takes [low, high]")
        low = _single(kind, "gte", raw[0], f"{path}[0]")
        high = _single(kind, "lte", raw[1], f"{path}[1]")
        if isinstance(low, str) != isinstance(high, str):
            raise RuleError(path, "between takes two numbers or two texts")
        if low > high:
            raise RuleError(path, "between takes [low, high] with low not above high")
        return (low, high)
    if op == "contains" and isinstance(raw, str) and not raw:
        raise RuleError(path, "contains takes non-empty text")
    return _single(kind, op, raw, path)


def _single(kind: FieldKind, op: str, raw: Any, path: str) -> Any:
    if kind in _TYPED_VALUES:
        return _TYPED_VALUES[kind](raw, path)
    if isinstance(raw, str):
        return _text(raw, path)
    if _is_number(raw) and _finite(raw):
        return raw
    ordered = op in _ORDER
    if isinstance(raw, bool) and not ordered:
        return raw
    raise RuleError(
        path,
        "value must be text or a number"
        if ordered
        else "value must be text, a number, true or false",
    )


def _number(raw: Any, path: str) -> float:
    if not _is_number(raw) or not _finite(raw):
        raise RuleError(path, "value must be a number")
    return raw  # type: ignore[no-any-return]


def _flag(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise RuleError(path, "value must be true or false")
    return raw


def _consent(raw: Any, path: str) -> str:
    if raw not in STATES:
        raise RuleError(path, f"value must be one of {', '.join(STATES)}")
    return str(raw)


def _text(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or len(raw) > MAX_TEXT:
        raise RuleError(path, f"value must be text of at most {MAX_TEXT:,} characters")
    return raw


def _moment(raw: Any, path: str) -> datetime:
    if isinstance(raw, datetime):
        return _aware(raw).astimezone(UTC)
    if isinstance(raw, str):
        try:
            return _aware(datetime.fromisoformat(raw)).astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    raise RuleError(path, "value must be a date and time in ISO 8601, e.g. 2026-03-01T00:00:00Z")


def _finite(value: float) -> bool:
    return -_INT64 <= value < _INT64 if isinstance(value, int) else math.isfinite(value)


_NUMBER_CLASSES: Final = frozenset({int, float})


def _is_number(value: Any) -> bool:
    cls = value.__class__
    return cls is int or cls is float or (cls is not bool and isinstance(value, int | float))


_TYPED_VALUES: Final[dict[FieldKind, Callable[[Any, str], Any]]] = {
    FieldKind.NUMBER: _number,
    FieldKind.COUNTER: _number,
    FieldKind.TEXT: _text,
    FieldKind.TEXT_LIST: _text,
    FieldKind.DATETIME: _moment,
    FieldKind.FLAG: _flag,
    FieldKind.CONSENT: _consent,
}


# --- evaluation --------------------------------------------------------------------------------


def value_test(op: str, value: Any) -> ValueTest:
    """The compiled test of one value (missing and null arrive as None, a missing counter
    as 0); ``within_last_days`` needs ``now`` and is compiled by the caller."""
    if op == "exists":
        return _exists if value else _absent
    if op == "ne":
        eq = _equals(value)
        return lambda v: not eq(v)
    if op == "between":
        low, high = value
        return _typed(low, lambda v, _: low <= v <= high)
    if op in _ORDER:
        return _typed(value, _ORDER[op])
    return {"eq": _equals, "in": _one_of, "contains": _contains}[op](value)


def _exists(v: Any) -> bool:
    return v is not None


def _absent(v: Any) -> bool:
    return v is None


def _equals(x: Any) -> ValueTest:
    if isinstance(x, bool):
        return lambda v: v is x
    if isinstance(x, str):
        return lambda v: v == x and isinstance(v, str)
    # Only numbers equal a number; True == 1 in Python, not in a rule.
    return lambda v: v == x and v.__class__ is not bool and _is_number(v)


def _typed(x: Any, compare: Callable[[Any, Any], bool]) -> ValueTest:
    """``compare(v, x)`` for values ``v`` of ``x``'s type (numbers: int and float alike)."""
    if isinstance(x, str):
        return lambda v: isinstance(v, str) and compare(v, x)
    if isinstance(x, datetime):
        return lambda v: isinstance(v, datetime) and compare(_aware(v), x)
    return lambda v: (v.__class__ in _NUMBER_CLASSES or _is_number(v)) and compare(v, x)


def _one_of(values: tuple[Any, ...]) -> ValueTest:
    texts = frozenset(v for v in values if isinstance(v, str))
    flags = frozenset(v for v in values if isinstance(v, bool))
    numbers = frozenset(v for v in values if _is_number(v))

    def test(v: Any) -> bool:
        if isinstance(v, str):
            return v in texts
        if v.__class__ is bool:
            return v in flags
        return _is_number(v) and v in numbers

    return test


def _contains(x: Any) -> ValueTest:
    eq = _equals(x)

    def in_list(v: Any) -> bool:
        if isinstance(v, list | tuple):
            for item in v:
                if eq(item):
                    return True
        return False

    if isinstance(x, str):
        return lambda v: x in v if isinstance(v, str) else in_list(v)
    return in_list


def _reader(keys: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Any]:
    """Reads a stored path; a missing step, or a step that is not an object, gives None."""
    if len(keys) == 1:
        (key,) = keys
        return lambda doc: doc.get(key)
    if len(keys) == 2:
        head, key = keys

        def read(doc: Mapping[str, Any]) -> Any:
            sub = doc.get(head)
            if sub.__class__ is dict:  # the usual case, checked first for speed
                return sub.get(key)
            return sub.get(key) if isinstance(sub, Mapping) else None

        return read
    head, rest = keys[0], _reader(keys[1:])

    def read_deeper(doc: Mapping[str, Any]) -> Any:
        sub = doc.get(head)
        return rest(sub) if isinstance(sub, Mapping) else None

    return read_deeper


def _compile(node: Node) -> ProfileTest:
    if isinstance(node, FieldCondition):
        return _field_test(node)
    if isinstance(node, EventCondition):
        return _event_test(node)
    if isinstance(node, Not):
        inner = _compile(node.rule)
        return lambda p, e, now: not inner(p, e, now)
    # Cheap field tests first; the outcome does not depend on the order.
    ordered = sorted(node.rules, key=lambda n: not isinstance(n, FieldCondition))
    tests = tuple(_compile(child) for child in ordered)
    if len(tests) == 1:
        return tests[0]
    if isinstance(node, AllOf):

        def every(p: Mapping[str, Any], e: Sequence[EventRecord], now: datetime) -> bool:
            for test in tests:  # noqa: SIM110 (a loop: no generator per call)
                if not test(p, e, now):
                    return False
            return True

        return every

    def some(p: Mapping[str, Any], e: Sequence[EventRecord], now: datetime) -> bool:
        for test in tests:  # noqa: SIM110 (a loop: no generator per call)
            if test(p, e, now):
                return True
        return False

    return some


def _field_test(node: FieldCondition) -> ProfileTest:
    if node.kind is FieldKind.PERSONAL:
        name, wanted = node.trait, bool(node.value)

        def personal(p: Mapping[str, Any], e: Sequence[EventRecord], now: datetime) -> bool:
            present = p.get("traits_present")
            has = isinstance(present, list | tuple | set | frozenset) and name in present
            return has is wanted

        return personal
    get = _reader(node.keys)
    if node.op == "within_last_days":
        span = timedelta(days=node.value)

        def recent(p: Mapping[str, Any], e: Sequence[EventRecord], now: datetime) -> bool:
            v = get(p)
            return isinstance(v, datetime) and _aware(v) >= now - span

        return recent
    test = value_test(node.op, node.value)
    if node.kind is FieldKind.COUNTER and node.op != "exists":

        def counter(p: Mapping[str, Any], e: Sequence[EventRecord], now: datetime) -> bool:
            v = get(p)
            return test(0 if v is None else v)

        return counter
    if len(node.keys) == 2:
        # The reader inlined: one call less on the hottest path.
        head, key = node.keys

        def nested(p: Mapping[str, Any], e: Sequence[EventRecord], now: datetime) -> bool:
            sub = p.get(head)
            if sub.__class__ is dict:
                return test(sub.get(key))
            return test(sub.get(key) if isinstance(sub, Mapping) else None)

        return nested
    return lambda p, e, now: test(get(p))


def _where_test(where: tuple[PropertyCondition, ...]) -> Callable[[Mapping[str, Any]], bool]:
    tests = tuple((c.property, value_test(c.op, c.value)) for c in where)
    if not tests:
        return lambda props: True

    def holds(props: Mapping[str, Any]) -> bool:
        for name, test in tests:  # noqa: SIM110 (a loop: no generator per call)
            if not test(props.get(name)):
                return False
        return True

    return holds


def _event_test(node: EventCondition) -> ProfileTest:
    name, where = node.event, _where_test(node.where)
    bound = _COUNT_BOUND[node.count.op]
    wanted = node.count.n
    span = None if node.within_last_days is None else timedelta(days=node.within_last_days)

    def anchors(events: Sequence[EventRecord], now: datetime) -> list[EventRecord]:
        since = None if span is None else now - span
        return [
            e
            for e in events
            if e.name == name and (since is None or _aware(e.at) >= since) and where(e.properties)
        ]

    follow = node.not_followed_by
    if follow is None:
        return lambda p, events, now: bound(len(anchors(events, now)), wanted)
    gap = timedelta(hours=follow.within_hours)
    follow_name, follow_where = follow.event, _where_test(follow.where)

    def unfollowed(p: Mapping[str, Any], events: Sequence[EventRecord], now: datetime) -> bool:
        found = anchors(events, now)
        if not found:
            return bound(0, wanted)
        times = sorted(
            _aware(e.at) for e in events if e.name == follow_name and follow_where(e.properties)
        )
        qualifying = 0
        for anchor in found:
            start = _aware(anchor.at)
            end = start + gap
            if now < end:
                continue
            between = bisect_right(times, end) - bisect_left(times, start)
            if anchor.name == follow_name and follow_where(anchor.properties):
                between -= 1  # the anchor is not its own follow-up
            qualifying += between == 0
        return bound(qualifying, wanted)

    return unfollowed


# --- canonical JSON ----------------------------------------------------------------------------


def _node_json(node: Node) -> dict[str, Any]:
    if isinstance(node, AllOf):
        return {"all": [_node_json(n) for n in node.rules]}
    if isinstance(node, AnyOf):
        return {"any": [_node_json(n) for n in node.rules]}
    if isinstance(node, Not):
        return {"not": _node_json(node.rule)}
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
