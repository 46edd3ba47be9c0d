"""Segment rules: the JSON language audiences are defined in, validated and compiled once.

A rule is parsed (:mod:`.parser`) against the field vocabulary (:mod:`.fields`) into an
immutable tree (:mod:`.tree`, :class:`Rule`) that compiles (:mod:`.compiler`), at parse
time, into closures, so :meth:`Rule.matches` costs microseconds per profile change. The same
tree is pushed down to MongoDB for backfills (:mod:`services.segmentation.store.rule_query`).

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

from services.segmentation.rules.compiler import value_test
from services.segmentation.rules.fields import (
    ALLOWED_OPS,
    COUNT_OPERATORS,
    FIXED_FIELDS,
    OPERATORS,
    FieldKind,
    RuleError,
    json_path,
)
from services.segmentation.rules.parser import (
    DEFAULT_PII,
    MAX_CONDITIONS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_HOURS,
    MAX_JSON_DEPTH,
    MAX_LIST,
    MAX_TEXT,
    load,
    parse,
)
from services.segmentation.rules.tree import (
    AllOf,
    AnyOf,
    CountBound,
    EventCondition,
    EventRecord,
    FieldCondition,
    FollowUp,
    Node,
    Not,
    Operand,
    ProfileView,
    PropertyCondition,
    Rule,
    Scalar,
    days_of,
    items_of,
)

__all__ = [
    "ALLOWED_OPS",
    "COUNT_OPERATORS",
    "DEFAULT_PII",
    "FIXED_FIELDS",
    "MAX_CONDITIONS",
    "MAX_DAYS",
    "MAX_DEPTH",
    "MAX_HOURS",
    "MAX_JSON_DEPTH",
    "MAX_LIST",
    "MAX_TEXT",
    "OPERATORS",
    "AllOf",
    "AnyOf",
    "CountBound",
    "EventCondition",
    "EventRecord",
    "FieldCondition",
    "FieldKind",
    "FollowUp",
    "Node",
    "Not",
    "Operand",
    "ProfileView",
    "PropertyCondition",
    "Rule",
    "RuleError",
    "Scalar",
    "days_of",
    "items_of",
    "json_path",
    "load",
    "parse",
    "value_test",
]
