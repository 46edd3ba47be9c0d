"""Compiling a rule tree into closures, so evaluating a rule against a profile change costs
microseconds: the value tests, the field readers and the event-condition counters."""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeGuard

from services.segmentation.rules.fields import FieldKind
from services.segmentation.rules.tree import (
    AllOf,
    EventCondition,
    EventRecord,
    FieldCondition,
    Node,
    Not,
    ProfileTest,
    PropertyCondition,
    ValueTest,
    aware,
    days_of,
)

# The ordering operators, shared with the parser (which values they accept).
ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_COUNT_BOUND: Final[dict[str, Callable[[Any, Any], bool]]] = {**ORDER, "eq": operator.eq}
_NUMBER_CLASSES: Final = frozenset({int, float})


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether a value is a number in a rule's sense (``True`` is not 1)."""
    cls = value.__class__
    return cls is int or cls is float or (cls is not bool and isinstance(value, int | float))


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
    if op in ORDER:
        return _typed(value, ORDER[op])
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
    return lambda v: v == x and v.__class__ is not bool and is_number(v)


def _typed(x: Any, compare: Callable[[Any, Any], bool]) -> ValueTest:
    """``compare(v, x)`` for values ``v`` of ``x``'s type (numbers: int and float alike)."""
    if isinstance(x, str):
        return lambda v: isinstance(v, str) and compare(v, x)
    if isinstance(x, datetime):
        return lambda v: isinstance(v, datetime) and compare(aware(v), x)
    return lambda v: (v.__class__ in _NUMBER_CLASSES or is_number(v)) and compare(v, x)


def _one_of(values: tuple[Any, ...]) -> ValueTest:
    texts = frozenset(v for v in values if isinstance(v, str))
    flags = frozenset(v for v in values if isinstance(v, bool))
    numbers = frozenset(v for v in values if is_number(v))

    def test(v: Any) -> bool:
        if isinstance(v, str):
            return v in texts
        if v.__class__ is bool:
            return v in flags
        return is_number(v) and v in numbers

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


def compile_rule(node: Node) -> ProfileTest:
    """The test a tree compiles to, evaluated by :meth:`Rule.matches`."""
    if isinstance(node, FieldCondition):
        return _field_test(node)
    if isinstance(node, EventCondition):
        return _event_test(node)
    if isinstance(node, Not):
        inner = compile_rule(node.rule)
        return lambda p, e, now: not inner(p, e, now)
    # Cheap field tests first; the outcome does not depend on the order.
    ordered = sorted(node.rules, key=lambda n: not isinstance(n, FieldCondition))
    tests = tuple(compile_rule(child) for child in ordered)
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
        span = timedelta(days=days_of(node.value))

        def recent(p: Mapping[str, Any], e: Sequence[EventRecord], now: datetime) -> bool:
            v = get(p)
            return isinstance(v, datetime) and aware(v) >= now - span

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
            if e.name == name and (since is None or aware(e.at) >= since) and where(e.properties)
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
            aware(e.at) for e in events if e.name == follow_name and follow_where(e.properties)
        )
        qualifying = 0
        for anchor in found:
            start = aware(anchor.at)
            end = start + gap
            if now < end:
                continue
            between = bisect_right(times, end) - bisect_left(times, start)
            if anchor.name == follow_name and follow_where(anchor.properties):
                between -= 1  # the anchor is not its own follow-up
            qualifying += between == 0
        return bound(qualifying, wanted)

    return unfollowed
