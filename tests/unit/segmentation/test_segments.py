"""Picking the segments a change can affect, and who enters or leaves."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from services.segmentation.rules import parse
from services.segmentation.segments import (
    ENTERED,
    EXITED,
    LIVE,
    Catalog,
    Segment,
    segment_id_for,
    transitions,
)

NOW = datetime(2026, 5, 1, tzinfo=UTC)
FIELDS = [
    "orders.revenue",
    "loyalty.tier",
    "consent.email_marketing",
    "behaviour.cart_open",
    "traits.plan",
    "traits.city",
    "event_counts.Product Viewed",
    "scores.p_alive",
]
CHANGES = [
    "orders",
    "loyalty",
    "consent.email_marketing",
    "consent.sms_marketing",
    "behaviour.cart",
    "behaviour.sessions",
    "traits.plan",
    "traits",
    "event_counts.Product Viewed",
    "event_counts.Checkout Started",
    "scores",
]


def field_rule(field: str) -> dict[str, object]:
    if field == "loyalty.tier":
        return {"field": field, "op": "eq", "value": "Gold"}
    if field == "consent.email_marketing":
        return {"field": field, "op": "eq", "value": "granted"}
    if field == "behaviour.cart_open":
        return {"field": field, "op": "eq", "value": True}
    if field.startswith("traits."):
        return {"field": field, "op": "exists", "value": True}
    return {"field": field, "op": "gt", "value": 1}


@given(
    st.lists(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3), min_size=1, max_size=8),
    st.lists(st.sampled_from(CHANGES), max_size=4),
)
def test_the_index_picks_exactly_the_segments_a_scan_would(
    fields_per_segment: list[list[str]], changed: list[str]
) -> None:
    segments = [
        Segment(f"s{n}", f"s{n}", 1, parse({"all": [field_rule(f) for f in fields]}), LIVE)
        for n, fields in enumerate(fields_per_segment)
    ]
    segments.append(
        Segment("ev", "ev", 1, parse({"event": "Checkout Started", "within_last_days": 7}), LIVE)
    )
    catalog = Catalog(segments)
    counted = {c.split(".", 1)[1] for c in changed if c.startswith("event_counts.")}
    scanned = {s.id for s in segments if s.reads_any(changed) or s.rule.event_names & counted}
    assert {s.id for s in catalog.reading(changed)} == scanned


def test_changes_to_the_catalogue_reach_the_index() -> None:
    gold = Segment("gold", "Gold", 1, parse(field_rule("loyalty.tier")), LIVE)
    catalog = Catalog([gold])
    assert catalog.reading(["loyalty"]) == [gold]
    catalog.discard("gold")
    assert catalog.reading(["loyalty"]) == []
    plan = Segment("plan", "Plan", 1, parse(field_rule("traits.plan")), LIVE)
    catalog.put(plan)
    assert catalog.reading(["traits.plan"]) == [plan]
    assert catalog.reading(["traits"]) == [plan]  # the traits as a whole changed
    assert catalog.reading(["traits.city"]) == []


def test_transitions_enter_and_exit_once() -> None:
    evaluated = {"a": (True, 1), "b": (False, 2), "c": (True, 1), "d": (False, 1)}
    changes = transitions("c1", evaluated, {"b", "c"}, NOW, "cause")
    assert [(t.segment_id, t.change) for t in changes] == [("a", ENTERED), ("b", EXITED)]
    again = transitions("c1", evaluated, {"b", "c"}, NOW, "cause")
    assert [t.event_id for t in again] == [t.event_id for t in changes]  # same input, same ids


def test_ids_from_names() -> None:
    assert segment_id_for("VIP customers (EU)") == "vip-customers-eu"
    assert segment_id_for("!!!") == "segment"


def test_engagement_segments_follow_the_counters_they_derive_from() -> None:
    opened = parse({"field": "engagement.email_opened.count", "op": "gte", "value": 3})
    readers = Segment("readers", "Readers", 1, opened, LIVE)
    catalog = Catalog([readers])
    assert catalog.reading(["event_counts.Email Opened"]) == [readers]
    assert catalog.reading(["event_counts.Product Viewed"]) == []
