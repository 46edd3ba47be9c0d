"""Parsing a segment rule: its JSON text validated, every problem reported with the path of
the bad part, and the tree compiled once."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from services.platform.fieldnames import field_key
from services.platform.pii import PII_TRAITS
from services.platform.validation import json_nesting_exceeds
from services.platform.vocabulary import STATES
from services.segmentation.rules.compiler import ORDER, compile_rule, is_number
from services.segmentation.rules.fields import (
    ALLOWED_OPS,
    COUNT_OPERATORS,
    FIXED_FIELDS,
    NAMED_FAMILIES,
    OPERATORS,
    FieldKind,
    RuleError,
)
from services.segmentation.rules.tree import (
    AllOf,
    AnyOf,
    CountBound,
    EventCondition,
    FieldCondition,
    FollowUp,
    Node,
    Not,
    Operand,
    PropertyCondition,
    Rule,
    Scalar,
    aware,
    walk,
)

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
_KINDS: Final = ("all", "any", "not", "field", "event")


def parse(rule: object, pii_traits: frozenset[str] = DEFAULT_PII) -> Rule:
    """Validate a JSON rule and compile it; raises :class:`RuleError` naming the first
    problem found (depth first, in document order)."""
    root = _Parser(pii_traits).rule(rule, "rule", 1)
    nodes = list(walk(root))
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
        compiled=compile_rule(root),
    )


def load(rule_json: str) -> object:
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


def _announced_path(path: str) -> str:
    head = path.split(".", 1)[0]
    return path if head in NAMED_FAMILIES else head


# --- validation --------------------------------------------------------------------------------


class _Parser:
    """One parse: the PII set and the running condition count."""

    def __init__(self, pii_traits: frozenset[str]) -> None:
        self.pii = pii_traits
        self.conditions = 0

    def rule(self, raw: object, path: str, depth: int) -> Node:
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

    def field_kind(self, name: object, path: str) -> tuple[FieldKind, tuple[str, ...]]:
        if not isinstance(name, str) or not name:
            raise RuleError(path, "field must be a profile path such as orders.revenue")
        if name in FIXED_FIELDS:
            return FIXED_FIELDS[name], tuple(name.split("."))
        head, _, rest = name.partition(".")
        if head in NAMED_FAMILIES and rest and "\x00" not in rest:
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

    def follow_up(self, raw: object, path: str) -> FollowUp:
        if not isinstance(raw, Mapping):
            raise RuleError(path, 'not_followed_by is {"event": ..., "within_hours": ...}')
        _only(raw, ("event", "where", "within_hours"), path, "takes event, where, within_hours")
        name = _event_name(raw.get("event"), f"{path}.event")
        where = self.where(raw.get("where"), f"{path}.where")
        if "within_hours" not in raw:
            raise RuleError(path, "not_followed_by needs within_hours")
        hours = _positive(raw["within_hours"], MAX_HOURS, f"{path}.within_hours")
        return FollowUp(name, where, hours)

    def where(self, raw: object, path: str) -> tuple[PropertyCondition, ...]:
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


def _event_name(raw: object, path: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RuleError(path, "event must be an event name such as 'Order Completed'")
    return raw


def _count(raw: object, path: str) -> CountBound:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise RuleError(path, 'count is one bound, e.g. {"gte": 3}')
    ((op, n),) = raw.items()
    if op not in COUNT_OPERATORS:
        raise RuleError(f"{path}.{op}", f"unknown count bound; use {', '.join(COUNT_OPERATORS)}")
    if not is_number(n) or not _finite(n) or n != int(n) or not 0 <= n <= _INT64 - 1:
        raise RuleError(f"{path}.{op}", "count must be a whole number, 0 or more")
    return CountBound(op, int(n))


def _positive(raw: object, limit: float, path: str) -> float:
    if not is_number(raw) or not 0 < raw <= limit:
        raise RuleError(path, f"must be a number greater than 0 and at most {limit:,}")
    return raw


def _operand(kind: FieldKind, op: str, raw: object, path: str) -> Operand:
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
        if _above(low, high):
            raise RuleError(path, "between takes [low, high] with low not above high")
        return (low, high)
    if op == "contains" and isinstance(raw, str) and not raw:
        raise RuleError(path, "contains takes non-empty text")
    return _single(kind, op, raw, path)


def _single(kind: FieldKind, op: str, raw: object, path: str) -> Scalar:
    if kind in _TYPED_VALUES:
        return _TYPED_VALUES[kind](raw, path)
    if isinstance(raw, str):
        return _text(raw, path)
    if is_number(raw) and _finite(raw):
        return raw
    ordered = op in ORDER
    if isinstance(raw, bool) and not ordered:
        return raw
    raise RuleError(
        path,
        "value must be text or a number"
        if ordered
        else "value must be text, a number, true or false",
    )


def _number(raw: object, path: str) -> float:
    if not is_number(raw) or not _finite(raw):
        raise RuleError(path, "value must be a number")
    return raw


def _flag(raw: object, path: str) -> bool:
    if not isinstance(raw, bool):
        raise RuleError(path, "value must be true or false")
    return raw


def _consent(raw: object, path: str) -> str:
    if raw not in STATES:
        raise RuleError(path, f"value must be one of {', '.join(STATES)}")
    return str(raw)


def _text(raw: object, path: str) -> str:
    if not isinstance(raw, str) or len(raw) > MAX_TEXT:
        raise RuleError(path, f"value must be text of at most {MAX_TEXT:,} characters")
    return raw


def _moment(raw: object, path: str) -> datetime:
    if isinstance(raw, datetime):
        return aware(raw).astimezone(UTC)
    if isinstance(raw, str):
        try:
            return aware(datetime.fromisoformat(raw)).astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    raise RuleError(path, "value must be a date and time in ISO 8601, e.g. 2026-03-01T00:00:00Z")


def _above(low: Scalar, high: Scalar) -> bool:
    # The field's kind made both numbers, both texts or both times (checked by the caller).
    return bool(low > high)  # type: ignore[operator]


def _finite(value: float) -> bool:
    return -_INT64 <= value < _INT64 if isinstance(value, int) else math.isfinite(value)


_TYPED_VALUES: Final[dict[FieldKind, Callable[[object, str], Scalar]]] = {
    FieldKind.NUMBER: _number,
    FieldKind.COUNTER: _number,
    FieldKind.TEXT: _text,
    FieldKind.TEXT_LIST: _text,
    FieldKind.DATETIME: _moment,
    FieldKind.FLAG: _flag,
    FieldKind.CONSENT: _consent,
}
