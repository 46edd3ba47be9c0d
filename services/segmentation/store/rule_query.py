"""Segment rules pushed down to MongoDB, so a backfill lets the database find the members.

Each condition becomes a filter that selects exactly the documents ``Rule.matches`` accepts,
missing and null fields included, which is what makes ``not`` a plain ``$nor``. MongoDB's
habits that would otherwise disagree with the Python semantics are fenced off here:

- A comparison on an array matches when any element matches; traits may hold arrays, so
  comparisons on traits also require ``$not: {$type: "array"}``. The fixed fields are taken
  to hold their documented types (never arrays).
- ``{field: null}`` matches missing fields too: counters read 0 when missing, so a condition
  that 0 satisfies adds that alternative.
- ``contains`` is a regular expression on text (every ASCII punctuation or control character
  escaped as ``\\xHH``, which PCRE and Python agree on) or ``$elemMatch`` on arrays.
- BSON stores times to the millisecond: bounds are rounded to the millisecond so that the
  comparison with a stored time gives the answer the exact bound would.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.segmentation.rules import (
    AllOf,
    EventCondition,
    FieldCondition,
    FieldKind,
    Node,
    Not,
    Rule,
    days_of,
    items_of,
    value_test,
)

Query = dict[str, Any]
_NOT_ARRAY = {"$not": {"$type": "array"}}
_MS = timedelta(milliseconds=1)


def to_query(rule: Rule, now: datetime) -> Query | None:
    """A MongoDB filter over stored profile documents that selects exactly the customers
    ``rule.matches`` selects (with no events), or None when the rule has event conditions.
    Exact for times stored with millisecond precision, as BSON stores them."""
    return exact_query(rule.root, _aware(now))


def prefilter(rule: Rule, now: datetime) -> Query:
    """A MongoDB filter every member satisfies: the field part of a rule with event
    conditions, so a backfill streams only candidates (``{}`` when nothing narrows)."""
    return candidate_query(rule.root, _aware(now))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def exact_query(root: Node, now: datetime) -> Query | None:
    """The filter selecting exactly the members, or None when events are needed."""
    query, exact = _pushdown(root, now)
    return query if exact else None


def candidate_query(root: Node, now: datetime) -> Query:
    """A filter every member satisfies (event conditions left to the caller)."""
    query, _ = _pushdown(root, now)
    return query if query is not None else {}


def _pushdown(node: Node, now: datetime) -> tuple[Query | None, bool]:
    """(filter, exact): a None filter selects everything; an inexact one a superset."""
    if isinstance(node, FieldCondition):
        return condition_query(node, now), True
    if isinstance(node, EventCondition):
        return None, False
    if isinstance(node, Not):
        inner, exact = _pushdown(node.rule, now)
        # Only an exact filter can be negated: the complement of a superset is not one.
        return ({"$nor": [inner]}, True) if exact and inner is not None else (None, False)
    parts = [_pushdown(child, now) for child in node.rules]
    exact = all(e for _, e in parts)
    queries = [q for q, _ in parts if q is not None]
    if isinstance(node, AllOf):
        # Dropping an inexact part of an "all" keeps a superset.
        return _combine("$and", queries), exact
    if len(queries) < len(parts):
        return None, False
    return _combine("$or", queries), exact


def _combine(op: str, queries: list[Query]) -> Query | None:
    if not queries:
        return None
    return queries[0] if len(queries) == 1 else {op: queries}


def condition_query(cond: FieldCondition, now: datetime) -> Query:
    """The filter equivalent to one field condition."""
    if cond.op == "ne":
        return {"$nor": [condition_query(replace(cond, op="eq"), now)]}
    if cond.op == "exists" and cond.value is False:
        return {"$nor": [_holds(replace(cond, value=True), now)]}
    query = _holds(cond, now)
    if (
        cond.kind is FieldKind.COUNTER
        and cond.op != "exists"
        and value_test(cond.op, cond.value)(0)
    ):
        return {"$or": [query, {_path(cond): None}]}
    return query


def _path(cond: FieldCondition) -> str:
    return ".".join(cond.keys)


def _holds(cond: FieldCondition, now: datetime) -> Query:
    """The filter for a positive test of a present, non-null value."""
    if cond.op == "exists":
        return _present(cond)
    if cond.op == "contains":
        return _contains(cond)
    return _scalar(cond, _comparison(cond, now))


def _present(cond: FieldCondition) -> Query:
    path = _path(cond)
    if cond.kind is FieldKind.PERSONAL:
        return {path: cond.trait}
    if cond.kind is FieldKind.ANY:
        # {path: {$ne: null}} alone would miss arrays holding a null.
        return {"$or": [{path: {"$type": "array"}}, {path: {"$ne": None}}]}
    return {path: {"$ne": None}}


def _comparison(cond: FieldCondition, now: datetime) -> Query:
    op, value = cond.op, cond.value
    if op == "within_last_days":
        return {"$gte": _bound("gte", now - timedelta(days=days_of(value)))}
    if op == "between":
        low, high = items_of(value)
        return {"$gte": _bound("gte", low), "$lte": _bound("lte", high)}
    if op == "in":
        return {"$in": list(items_of(value))}
    return {f"${op}": _bound(op, value)}


def _scalar(cond: FieldCondition, ops: Query) -> Query:
    """A comparison that must not reach into arrays (traits may hold them)."""
    return {_path(cond): {**ops, **_NOT_ARRAY} if cond.kind is FieldKind.ANY else ops}


def _contains(cond: FieldCondition) -> Query:
    path, value = _path(cond), cond.value
    in_text = {path: {"$regex": literal_pattern(value)}} if isinstance(value, str) else None
    if cond.kind is FieldKind.TEXT and in_text is not None:
        return in_text
    in_list = {path: {"$elemMatch": {"$eq": value}}}
    if cond.kind is FieldKind.ANY and in_text is not None:
        return {"$or": [{path: {**in_text[path], **_NOT_ARRAY}}, in_list]}
    return in_list


def literal_pattern(text: str) -> str:
    """A regular expression matching ``text`` literally anywhere in a string."""
    return "".join(c if c.isalnum() or not c.isascii() else f"\\x{ord(c):02x}" for c in text)


def _bound(op: str, value: Any) -> Any:
    """A comparison bound; times rounded to the millisecond grid BSON stores times on, in
    the direction that keeps the comparison's answer for every stored time."""
    if not isinstance(value, datetime):
        return value
    floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if floor == value or op in ("gt", "lte"):
        return floor
    return floor + _MS
