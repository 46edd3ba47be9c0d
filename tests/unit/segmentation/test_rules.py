"""The segment rule language: operators, combinators, validation, PII, event conditions,
abandoned checkout, what a rule reads, its canonical JSON and the shape of its pushdown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.segmentation.rules import (
    DEFAULT_PII,
    MAX_CONDITIONS,
    EventRecord,
    Rule,
    RuleError,
    parse,
)
from services.segmentation.store.rule_query import literal_pattern, prefilter, to_query

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

PROFILE: dict[str, Any] = {
    "_id": "c1",
    "traits": {
        "plan": "pro",
        "age": 41,
        "vip": True,
        "tags": ["runner", "newsletter", 7],
        "nickname": None,
        "odd%2Ekey": "dotted",
        "%24price": 12.5,
        "favourite colour": "green",
    },
    "traits_present": ["plan", "age", "vip", "tags", "email"],
    "event_counts": {"Product Viewed": 12, "Order Completed": 3, "a%2Eb": 1},
    "first_seen": NOW - 400 * DAY,
    "last_seen": NOW - 2 * DAY,
    "orders": {
        "count": 3,
        "revenue": 640.0,
        "average_order_value": 213.33,
        "first_order_at": NOW - 300 * DAY,
        "last_order_at": NOW - 20 * DAY,
    },
    "loyalty": {"tier": "gold", "points": 1200, "tier_since": NOW - 90 * DAY},
    "consent": {"email_marketing": "granted", "sms_marketing": "denied"},
    "behaviour": {
        "session_count": 9,
        "cart_open": True,
        "channels": ["web", "ios"],
        "last_page": "/shoes/trail-runner?size=42",
    },
    "engagement": {"email_opened": {"count": 4, "last_at": NOW - 3 * DAY}},
    "scores": {"p_alive": 0.25, "rfm_cell": "At risk", "clv_12m": 180.0},
}


def cond(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


def holds(rule: Any, profile: dict[str, Any] | None = None) -> bool:
    return parse(rule).matches(PROFILE if profile is None else profile, [], NOW)


# --- operators ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("loyalty.tier", "eq", "gold", True),
        ("loyalty.tier", "eq", "silver", False),
        ("orders.revenue", "eq", 640, True),  # int against a stored float
        ("traits.vip", "eq", True, True),
        ("traits.vip", "eq", 1, False),  # true is not 1
        ("traits.age", "eq", "41", False),  # text is not a number
        ("loyalty.tier", "ne", "silver", True),
        ("loyalty.tier", "ne", "gold", False),
        ("orders.revenue", "gt", 500, True),
        ("orders.revenue", "gt", 640, False),
        ("orders.revenue", "gte", 640, True),
        ("orders.revenue", "gte", 640.01, False),
        ("scores.p_alive", "lt", 0.3, True),
        ("scores.p_alive", "lt", 0.25, False),
        ("scores.p_alive", "lte", 0.25, True),
        ("scores.p_alive", "lte", 0.2, False),
        ("traits.plan", "gt", "basic", True),  # text orders as text
        ("traits.plan", "gt", 3, False),  # text is never greater than a number
        ("traits.age", "gt", "3", False),  # nor a number than text
        ("last_seen", "gt", "2026-03-01T00:00:00Z", True),
        ("last_seen", "lt", "2026-03-01T00:00:00+00:00", False),
        ("loyalty.tier", "in", ["gold", "platinum"], True),
        ("loyalty.tier", "in", ["silver"], False),
        ("traits.age", "in", ["41", 41.0], True),
        ("traits.vip", "in", [1], False),
        ("traits.plan", "contains", "ro", True),
        ("traits.plan", "contains", "RO", False),  # case-sensitive
        ("traits.tags", "contains", "runner", True),
        ("traits.tags", "contains", "run", False),  # lists hold whole elements
        ("traits.tags", "contains", 7, True),
        ("behaviour.channels", "contains", "ios", True),
        ("behaviour.channels", "contains", "android", False),
        ("behaviour.last_page", "contains", "?size=4", True),
        ("traits.plan", "exists", True, True),
        ("traits.nickname", "exists", True, False),  # null is no value
        ("traits.unknown", "exists", False, True),
        ("loyalty.points_redeemed", "exists", True, False),
        ("orders.revenue", "between", [640, 700], True),  # inclusive
        ("orders.revenue", "between", [100, 639.99], False),
        ("traits.plan", "between", ["a", "q"], True),
        ("first_seen", "between", ["2025-01-01T00:00:00Z", "2025-03-01T00:00:00Z"], True),
        ("last_seen", "within_last_days", 2, True),  # exactly 2 days ago: inside
        ("last_seen", "within_last_days", 1.5, False),
        ("engagement.email_opened.last_at", "within_last_days", 7, True),
        ("behaviour.cart_open", "eq", True, True),
        ("behaviour.cart_open", "ne", True, False),
        ("consent.email_marketing", "eq", "granted", True),
        ("consent.sms_marketing", "in", ["granted"], False),
        ("consent.analytics", "ne", "granted", True),  # never given: not granted
        ("event_counts.Product Viewed", "gte", 10, True),
        ("event_counts.a.b", "eq", 1, True),  # original name, stored escaped
        ("traits.odd.key", "eq", "dotted", True),
        ("traits.$price", "lt", 20, True),
        ("traits.favourite colour", "eq", "green", True),
        ("engagement.email_opened.count", "gt", 3, True),
        ("scores.rfm_cell", "eq", "At risk", True),
    ],
)
def test_each_operator(field: str, op: str, value: Any, expected: bool) -> None:
    assert holds(cond(field, op, value)) is expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (cond("orders.revenue", "gt", 0), False),
        (cond("orders.revenue", "lt", 1_000_000), False),
        (cond("orders.revenue", "ne", 5), True),  # ne is exactly "not eq"
        (cond("orders.revenue", "exists", False), True),
        (cond("traits.plan", "contains", "p"), False),
        (cond("last_seen", "within_last_days", 30), False),
        # Counters count from zero.
        (cond("event_counts.Order Completed", "lt", 1), True),
        (cond("event_counts.Order Completed", "eq", 0), True),
        (cond("event_counts.Order Completed", "ne", 0), False),
        (cond("event_counts.Order Completed", "exists", True), False),
        (cond("orders.count", "between", [0, 0]), True),
        (cond("engagement.push_opened.count", "in", [0, 1]), True),
        (cond("behaviour.session_count", "gte", 1), False),
    ],
)
def test_missing_fields(rule: dict[str, Any], expected: bool) -> None:
    assert holds(rule, {"_id": "new", "traits": {"plan": None}}) is expected


def test_a_list_never_compares_as_a_whole() -> None:
    profile = {"traits": {"tags": ["b", "c"], "scores": [5, 50]}}
    assert not holds(cond("traits.tags", "eq", "b"), profile)
    assert holds(cond("traits.tags", "ne", "b"), profile)
    assert not holds(cond("traits.scores", "between", [10, 20]), profile)
    assert not holds(cond("traits.scores", "gt", 1), profile)
    assert not holds(cond("traits.tags", "in", ["b"]), profile)


def test_naive_times_are_utc() -> None:
    profile = {"last_seen": (NOW - 3 * HOUR).replace(tzinfo=None)}
    rule = parse(cond("last_seen", "within_last_days", 0.125))
    assert rule.matches(profile, [], NOW)
    assert rule.matches(profile, [], NOW.replace(tzinfo=None))
    assert not rule.matches(profile, [], NOW + HOUR)


# --- combinators -------------------------------------------------------------------------------

GOLD = cond("loyalty.tier", "eq", "gold")
SILVER = cond("loyalty.tier", "eq", "silver")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"all": [GOLD]}, True),
        ({"all": [GOLD, SILVER]}, False),
        ({"any": [SILVER, GOLD]}, True),
        ({"any": [SILVER, SILVER]}, False),
        ({"not": SILVER}, True),
        ({"not": GOLD}, False),
        ({"not": {"not": GOLD}}, True),
        ({"all": [{"any": [SILVER, GOLD]}, {"not": SILVER}]}, True),
        ({"not": cond("orders.revenue", "gt", 10_000)}, True),
    ],
)
def test_combinators(rule: dict[str, Any], expected: bool) -> None:
    assert holds(rule) is expected


def test_not_of_a_comparison_includes_customers_without_the_field() -> None:
    rule = {"not": cond("orders.revenue", "gt", 500)}
    assert holds(rule, {"_id": "new"})


# --- validation --------------------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = GOLD
    for _ in range(depth - 1):
        rule = {"not": rule}
    return rule


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ("gold", "rule", "a rule is an object"),
        ({}, "rule", "needs one of all, any, not, field or event"),
        ({"all": [GOLD], "any": [GOLD]}, "rule", "this one has all and any"),
        ({"all": []}, "rule.all", "non-empty list"),
        ({"any": GOLD}, "rule.any", "non-empty list"),
        ({"all": [GOLD], "note": "x"}, "rule.note", "unknown key 'note'"),
        ({"all": [GOLD, {**GOLD, "valu": 1}]}, "rule.all[1].valu", "unknown key 'valu'"),
        ({"all": [GOLD, {**GOLD, "op": "greater"}]}, "rule.all[1].op", "unknown operator"),
        ({"field": "loyalty.tier", "value": "gold"}, "rule", "needs an op"),
        ({"field": "loyalty.tier", "op": "eq"}, "rule", "needs a value"),
        ({"any": [cond("order.revenue", "gt", 1)]}, "rule.any[0].field", "unknown field"),
        (cond("orders", "exists", True), "rule.field", "unknown field"),
        (cond("traits.", "exists", True), "rule.field", "unknown field"),
        (cond("consent.marketing", "eq", "granted"), "rule.field", "unknown field"),
        (cond("engagement.fax_sent.count", "gt", 1), "rule.field", "unknown field"),
        (cond("loyalty.tier", "gt", "gold"), "rule.op", "gt does not apply to loyalty.tier"),
        (cond("orders.revenue", "contains", 5), "rule.op", "contains does not apply"),
        (cond("traits.plan", "within_last_days", 7), "rule.op", "does not apply"),
        (cond("behaviour.channels", "eq", "web"), "rule.op", "does not apply"),
        (cond("orders.revenue", "gt", "500"), "rule.value", "must be a number"),
        (cond("orders.revenue", "gt", True), "rule.value", "must be a number"),
        (cond("orders.revenue", "gt", float("nan")), "rule.value", "must be a number"),
        (cond("loyalty.tier", "eq", 3), "rule.value", "must be text"),
        (cond("consent.analytics", "eq", "yes"), "rule.value", "granted, denied"),
        (cond("behaviour.cart_open", "eq", "true"), "rule.value", "true or false"),
        (cond("last_seen", "gt", "last week"), "rule.value", "ISO 8601"),
        (cond("last_seen", "within_last_days", 0), "rule.value", "greater than 0"),
        (cond("last_seen", "within_last_days", "7"), "rule.value", "greater than 0"),
        (cond("traits.plan", "exists", "yes"), "rule.value", "true or false"),
        (cond("traits.plan", "in", []), "rule.value", "list of 1"),
        (cond("traits.plan", "in", "pro"), "rule.value", "list of 1"),
        (cond("traits.plan", "in", ["pro", None]), "rule.value[1]", "text, a number"),
        (cond("traits.plan", "eq", {"a": 1}), "rule.value", "text, a number"),
        (cond("traits.plan", "gt", True), "rule.value", "text or a number"),
        (cond("traits.plan", "contains", ""), "rule.value", "non-empty"),
        (cond("orders.revenue", "between", [5]), "rule.value", "[low, high]"),
        (cond("orders.revenue", "between", [5, 1]), "rule.value", "low not above high"),
        (cond("orders.revenue", "between", [1, "5"]), "rule.value[1]", "number"),
        (cond("traits.plan", "between", [1, "z"]), "rule.value", "two numbers or two texts"),
        (cond("traits.email", "eq", "a@b.example"), "rule.op", "personal data"),
        (nested(11), "rule" + ".not" * 10, "more than 10 deep"),
        ({"any": [GOLD] * (MAX_CONDITIONS + 1)}, "rule.any[200]", "at most 200 conditions"),
        ({"event": ""}, "rule.event", "event name"),
        ({"event": "Viewed", "count": 3}, "rule.count", "one bound"),
        ({"event": "Viewed", "count": {"gte": 1, "lte": 3}}, "rule.count", "one bound"),
        ({"event": "Viewed", "count": {"atleast": 1}}, "rule.count.atleast", "unknown count"),
        ({"event": "Viewed", "count": {"gte": -1}}, "rule.count.gte", "whole number"),
        ({"event": "Viewed", "count": {"gte": 1.5}}, "rule.count.gte", "whole number"),
        ({"event": "Viewed", "within_last_days": -1}, "rule.within_last_days", "greater than 0"),
        ({"event": "Viewed", "within_hours": 3}, "rule.within_hours", "unknown key"),
        ({"event": "Viewed", "where": {"a": 1}}, "rule.where", "list of property conditions"),
        ({"event": "Viewed", "where": [cond("", "eq", 1)]}, "rule.where[0].field", "property"),
        (
            {"event": "Viewed", "where": [cond("category", "within_last_days", 1)]},
            "rule.where[0].op",
            "unknown operator",
        ),
        (
            {"event": "Viewed", "where": [cond("category", "eq", [1])]},
            "rule.where[0].value",
            "text, a number",
        ),
        ({"event": "A", "not_followed_by": "B"}, "rule.not_followed_by", "within_hours"),
        ({"event": "A", "not_followed_by": {"event": "B"}}, "rule.not_followed_by", "needs"),
        (
            {"event": "A", "not_followed_by": {"event": "B", "within_hours": 0}},
            "rule.not_followed_by.within_hours",
            "greater than 0",
        ),
        (
            {"event": "A", "not_followed_by": {"event": "B", "within_hours": 1, "n": 1}},
            "rule.not_followed_by.n",
            "unknown key",
        ),
    ],
)
def test_validation_names_the_bad_path(rule: Any, path: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse(rule)
    assert caught.value.path == path
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{path}: ")


def test_limits_are_inclusive() -> None:
    parse(nested(10))
    parse({"any": [GOLD] * MAX_CONDITIONS})


# --- personal data -----------------------------------------------------------------------------


def test_pii_traits_are_tested_for_existence_only_against_traits_present() -> None:
    assert holds(cond("traits.email", "exists", True))
    assert not holds(cond("traits.phone", "exists", True))
    assert holds(cond("traits.phone", "exists", False))
    assert holds(cond("traits.email", "exists", False), {"traits": {"email": "x@y.example"}})
    for op, value in [("eq", "x"), ("contains", "@"), ("ne", "x"), ("in", ["x"])]:
        with pytest.raises(RuleError, match="personal data"):
            parse(cond("traits.email", op, value))


def test_the_pii_set_is_configurable() -> None:
    assert "email" in DEFAULT_PII
    rule = parse(cond("traits.email", "contains", "@"), pii_traits=frozenset({"phone"}))
    assert rule.matches({"traits": {"email": "x@y.example"}}, [], NOW)
    with pytest.raises(RuleError, match="'loyalty_id' is personal data"):
        parse(cond("traits.loyalty_id", "eq", "1"), pii_traits=frozenset({"loyalty_id"}))


# --- event conditions --------------------------------------------------------------------------


def viewed(ago: timedelta, category: str = "shoes", **extra: Any) -> EventRecord:
    return EventRecord("Product Viewed", NOW - ago, {"category": category, **extra})


SHOES_3_IN_7 = {
    "event": "Product Viewed",
    "where": [cond("category", "eq", "shoes")],
    "count": {"gte": 3},
    "within_last_days": 7,
}


def test_event_count_in_window_with_where() -> None:
    rule = parse(SHOES_3_IN_7)
    three = [viewed(1 * DAY), viewed(2 * DAY), viewed(7 * DAY)]  # 7 days ago: inside
    assert rule.matches({}, three, NOW)
    assert not rule.matches({}, three, NOW + timedelta(seconds=1))  # one falls out
    assert not rule.matches({}, [*three[:2], viewed(1 * DAY, "bags")], NOW)
    assert not rule.matches({}, [*three[:2], EventRecord("Order Completed", NOW, {})], NOW)
    assert not rule.matches({}, [], NOW)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        ({"gte": 2}, True),
        ({"gte": 3}, False),
        ({"gt": 1}, True),
        ({"gt": 2}, False),
        ({"eq": 2}, True),
        ({"eq": 0}, False),
        ({"lte": 2}, True),
        ({"lt": 2}, False),
    ],
)
def test_event_count_bounds(count: dict[str, int], expected: bool) -> None:
    rule = parse({"event": "Product Viewed", "count": count})
    assert rule.matches({}, [viewed(DAY), viewed(400 * DAY)], NOW) is expected


def test_event_defaults_and_negation() -> None:
    performed = parse({"event": "Order Completed"})
    never = parse({"not": {"event": "Order Completed", "within_last_days": 30}})
    order = EventRecord("Order Completed", NOW - 40 * DAY)
    assert performed.matches({}, [order], NOW)
    assert not performed.matches({}, [], NOW)
    assert never.matches({}, [order], NOW)
    assert not never.matches({}, [order], NOW - 20 * DAY)


def test_event_where_uses_every_property_operator() -> None:
    events = [viewed(HOUR, price=120, tags=["sale"], brand="Trailco", gift=True)]

    def with_where(*where: dict[str, Any]) -> bool:
        return parse({"event": "Product Viewed", "where": list(where)}).matches({}, events, NOW)

    assert with_where(cond("price", "between", [100, 150]), cond("brand", "contains", "Trail"))
    assert with_where(cond("tags", "contains", "sale"), cond("gift", "eq", True))
    assert with_where(cond("price", "gte", 120), cond("brand", "in", ["Trailco", "Roadco"]))
    assert with_where(cond("coupon", "exists", False), cond("brand", "ne", "Roadco"))
    assert not with_where(cond("price", "gt", "100"))  # text is not a number
    assert not with_where(cond("price", "lt", 120))
    assert not with_where(cond("coupon", "eq", "X"))
    assert not with_where(cond("category", "eq", "shoes"), cond("brand", "eq", "Roadco"))


def test_event_times_may_be_naive() -> None:
    rule = parse({"event": "Product Viewed", "within_last_days": 1})
    assert rule.matches({}, [EventRecord("Product Viewed", (NOW - HOUR).replace(tzinfo=None))], NOW)


# --- abandoned checkout ------------------------------------------------------------------------

ABANDONED = {
    "event": "Checkout Started",
    "within_last_days": 7,
    "not_followed_by": {"event": "Order Completed", "within_hours": 48},
}
STARTED = NOW - 60 * HOUR


def checkout(at: datetime, **properties: Any) -> EventRecord:
    return EventRecord("Checkout Started", at, properties)


def order(at: datetime, **properties: Any) -> EventRecord:
    return EventRecord("Order Completed", at, properties)


@pytest.mark.parametrize(
    ("events", "now", "expected"),
    [
        ([checkout(STARTED)], NOW, True),
        ([checkout(STARTED), order(STARTED + 47 * HOUR)], NOW, False),
        ([checkout(STARTED), order(STARTED)], NOW, False),  # same instant: followed
        ([checkout(STARTED), order(STARTED + 48 * HOUR)], NOW, False),  # exactly 48 h: followed
        ([checkout(STARTED), order(STARTED + 48 * HOUR + timedelta(milliseconds=1))], NOW, True),
        ([checkout(STARTED), order(STARTED + 55 * HOUR)], NOW, True),  # order after 48 h
        ([checkout(STARTED), order(STARTED - HOUR)], NOW, True),  # an earlier order
        ([checkout(STARTED)], STARTED + 48 * HOUR, True),  # exactly 48 h later: decided
        ([checkout(STARTED)], STARTED + 47 * HOUR, False),  # still time to order
        ([checkout(NOW - 8 * DAY)], NOW, False),  # outside the 7-day window
        ([order(STARTED + HOUR)], NOW, False),  # no checkout at all
        # The second checkout was ordered, the first was not.
        ([checkout(STARTED), checkout(NOW - 4 * DAY), order(NOW - 3 * DAY)], NOW, True),
    ],
)
def test_abandoned_checkout(events: list[EventRecord], now: datetime, expected: bool) -> None:
    assert parse(ABANDONED).matches({}, events, now) is expected


def test_abandoned_checkout_with_where_and_count() -> None:
    rule = parse(
        {
            "event": "Checkout Started",
            "where": [cond("value", "gte", 100)],
            "count": {"gte": 2},
            "not_followed_by": {
                "event": "Order Completed",
                "where": [cond("channel", "eq", "web")],
                "within_hours": 24,
            },
        }
    )
    first, second = NOW - 5 * DAY, NOW - 3 * DAY
    small = [checkout(first, value=150), checkout(second, value=20)]
    assert not rule.matches({}, small, NOW)
    both = [checkout(first, value=150), checkout(second, value=200)]
    assert rule.matches({}, both, NOW)
    in_store = order(second + HOUR, channel="store")  # not the follow-up the rule names
    assert rule.matches({}, [*both, in_store], NOW)
    assert not rule.matches({}, [*both, order(second + HOUR, channel="web")], NOW)


def test_a_follow_up_of_the_same_name_is_another_event() -> None:
    rule = parse(
        {"event": "Cart Viewed", "not_followed_by": {"event": "Cart Viewed", "within_hours": 1}}
    )
    alone = [EventRecord("Cart Viewed", NOW - 2 * HOUR)]
    assert rule.matches({}, alone, NOW)
    again = [*alone, EventRecord("Cart Viewed", NOW - 90 * timedelta(minutes=1))]
    # The first is followed by the second; the second is followed by nothing, after 1 h.
    assert rule.matches({}, again, NOW)
    assert not rule.matches({}, again, NOW - 45 * timedelta(minutes=1))


# --- what a rule reads -------------------------------------------------------------------------


def test_paths_event_names_and_time_dependence() -> None:
    rule = parse(
        {
            "all": [
                cond("traits.odd.key", "eq", "x"),
                cond("traits.email", "exists", True),
                cond("event_counts.Product Viewed", "gt", 1),
                cond("orders.revenue", "gt", 1),
                cond("loyalty.tier", "eq", "gold"),
                {"not": cond("consent.analytics", "eq", "denied")},
                {
                    "any": [
                        cond("scores.p_alive", "lt", 0.3),
                        cond("behaviour.cart_open", "eq", True),
                    ]
                },
                cond("engagement.email_opened.count", "gt", 0),
                cond("first_seen", "gt", "2025-01-01T00:00:00Z"),
                ABANDONED,
                {"not": {"event": "Refund Requested"}},
            ]
        }
    )
    assert rule.paths == {
        "traits.odd.key",
        "traits.email",
        "event_counts.Product Viewed",
        "orders",
        "loyalty",
        "consent",
        "scores",
        "behaviour",
        "engagement",
        "first_seen",
    }
    assert rule.event_names == {"Checkout Started", "Order Completed", "Refund Requested"}
    assert rule.uses_events
    assert rule.time_dependent


@pytest.mark.parametrize(
    ("rule", "time_dependent", "uses_events"),
    [
        (GOLD, False, False),
        (cond("last_seen", "gt", "2026-01-01T00:00:00Z"), False, False),
        (cond("last_seen", "within_last_days", 7), True, False),
        ({"event": "Viewed"}, False, True),
        ({"event": "Viewed", "within_last_days": 7}, True, True),
        ({"event": "A", "not_followed_by": {"event": "B", "within_hours": 1}}, True, True),
    ],
)
def test_time_dependence(rule: dict[str, Any], time_dependent: bool, uses_events: bool) -> None:
    parsed = parse(rule)
    assert parsed.time_dependent is time_dependent
    assert parsed.uses_events is uses_events


# --- canonical JSON and pushdown shape ---------------------------------------------------------


def test_to_json_is_canonical_and_parses_back_to_the_same_rule() -> None:
    raw = {
        "any": [
            cond("last_seen", "between", ["2026-01-01T01:00:00+01:00", "2026-02-01"]),
            {"event": "Viewed", "where": [cond("tags", "in", ["a", 1])]},
            {"not": ABANDONED},
        ]
    }
    rule = parse(raw)
    canonical = rule.to_json()
    assert canonical["any"][0]["value"] == ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]
    assert canonical["any"][1]["count"] == {"gte": 1}
    assert canonical["any"][2]["not"] == {**ABANDONED, "count": {"gte": 1}}
    again = parse(canonical)
    assert again == rule
    assert again.to_json() == canonical


def test_rules_are_immutable_values() -> None:
    rule = parse(GOLD)
    assert isinstance(rule, Rule)
    assert rule == parse(dict(GOLD))
    with pytest.raises(AttributeError):
        rule.root = parse(SILVER).root  # type: ignore[misc]


def test_to_query_pushes_fields_down_with_escaped_names() -> None:
    rule = parse(
        {
            "all": [
                cond("traits.odd.key", "eq", "x"),
                cond("event_counts.$set", "gt", 2),
                cond("traits.email", "exists", True),
                {"not": cond("loyalty.tier", "in", ["gold"])},
            ]
        }
    )
    assert to_query(rule, NOW) == {
        "$and": [
            {"traits.odd%2Ekey": {"$eq": "x", "$not": {"$type": "array"}}},
            {"event_counts.%24set": {"$gt": 2}},
            {"traits_present": "email"},
            {"$nor": [{"loyalty.tier": {"$in": ["gold"]}}]},
        ]
    }


def test_counters_that_zero_satisfies_also_select_missing_counters() -> None:
    rule = parse(cond("event_counts.Order Completed", "lt", 1))
    assert to_query(rule, NOW) == {
        "$or": [
            {"event_counts.Order Completed": {"$lt": 1}},
            {"event_counts.Order Completed": None},
        ]
    }


def test_time_bounds_are_rounded_to_the_millisecond_grid() -> None:
    now = NOW + timedelta(microseconds=1500)
    rule = parse(
        {
            "all": [
                cond("last_seen", "within_last_days", 1),
                cond("first_seen", "gt", "2026-01-01T00:00:00.000700+00:00"),
            ]
        }
    )
    assert to_query(rule, now) == {
        "$and": [
            {"last_seen": {"$gte": now - DAY + timedelta(microseconds=500)}},
            {"first_seen": {"$gt": datetime(2026, 1, 1, tzinfo=UTC)}},
        ]
    }


def test_event_conditions_are_not_pushed_down_but_narrow_a_prefilter() -> None:
    rule = parse({"all": [GOLD, {"any": [SILVER, {"event": "Viewed"}]}, SHOES_3_IN_7]})
    assert to_query(rule, NOW) is None
    assert prefilter(rule, NOW) == {"loyalty.tier": {"$eq": "gold"}}
    assert prefilter(parse({"not": {"all": [GOLD, {"event": "Viewed"}]}}), NOW) == {}
    assert prefilter(parse(GOLD), NOW) == to_query(parse(GOLD), NOW)


@pytest.mark.parametrize("text", ["a.b", "(x)*", "$^[]{}|+?\\", "tab\tnew\nline", "nul\x00", "é✓"])
def test_literal_pattern_matches_only_the_text(text: str) -> None:
    pattern = re.compile(literal_pattern(text))
    assert pattern.search(f"before {text} after")
    assert not pattern.search(text[:-1] + "#")
