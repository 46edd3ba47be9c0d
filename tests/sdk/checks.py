"""What the SDK tests check through GraphQL: a customer's identifiers, traits, counts, last
page, groups and timeline, polled until the platform has folded the events in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.kafka import eventually
from tests.support.platform import Platform

# How long the pipeline (gateway, Kafka, identity, profile) may take on a busy machine.
SETTLE_S = 45.0

VIEW_QUERY = """
query View($type: String!, $value: String!) {
  customer(by: {identifier: {type: $type, value: $value}}) {
    id
    identifiers { type value }
    traits
    eventCounts { name count }
    behaviour { lastPage }
    timeline(first: 100) { edges { node { type name } } }
  }
}
"""

GROUPS_QUERY = """
query Groups($type: String!, $value: String!) {
  customer(by: {identifier: {type: $type, value: $value}}) {
    id groups { edges { node { id traits } } }
  }
}
"""


async def view(
    platform: Platform, type_: str, value: str, query: str = VIEW_QUERY
) -> dict[str, Any] | None:
    """One customer as ``query`` shows it; fails on HTTP or GraphQL errors."""
    response = await platform.graphql(query, {"type": type_, "value": value})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    customer: dict[str, Any] | None = body["data"]["customer"]
    return customer


def counts(customer: dict[str, Any] | None) -> dict[str, int]:
    """The customer's track counts by event name."""
    return {c["name"]: c["count"] for c in (customer or {}).get("eventCounts", [])}


async def settled(
    platform: Platform,
    type_: str,
    value: str,
    ready: Callable[[dict[str, Any]], bool],
    what: str,
    query: str = VIEW_QUERY,
) -> dict[str, Any]:
    """Poll until the customer found by ``(type_, value)`` satisfies ``ready``; returns the
    last view. On time-out the assertion names ``what`` and shows what was seen."""
    seen: dict[str, Any] = {}

    async def check() -> bool:
        customer = await view(platform, type_, value, query)
        seen.clear()
        seen.update(customer or {})
        return customer is not None and ready(customer)

    try:
        await eventually(check, SETTLE_S, what, 0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen or None}") from None
    return seen


def has_group(customer: dict[str, Any], group_id: str, traits: dict[str, Any]) -> bool:
    """True when the customer belongs to ``group_id`` and the group carries ``traits``."""
    for edge in (customer.get("groups") or {}).get("edges") or []:
        group = edge["node"]
        if group["id"] == group_id and traits.items() <= (group.get("traits") or {}).items():
            return True
    return False


async def assert_alias_joined(platform: Platform, user_id: str, previous: str) -> None:
    """After page "Pricing" and "Trial Started" as ``previous``, an alias to ``user_id`` and
    "Subscribed" as the user: one customer holds the anonymous history."""
    customer = await settled(
        platform,
        "user_id",
        user_id,
        lambda c: counts(c) == {"Subscribed": 1, "Trial Started": 1},
        f"{user_id} carrying the history of {previous} (aliased)",
    )
    assert {"type": "anonymous_id", "value": previous} in customer["identifiers"]
    assert customer["behaviour"]["lastPage"] == "Pricing"
    before = await view(platform, "anonymous_id", previous)
    assert before is not None
    assert before["id"] == customer["id"]
