"""Orders through the Segment e-commerce spec show up in the 360-degree view: revenue net of
refunds, a repeated order counted once, loyalty points and the tier they reach."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

QUERY = """
query($value: String!) {
  customer(by: {identifier: {type: "user_id", value: $value}}) {
    orders { orderCount revenue { currency amount } averageOrderValue { amount } }
    loyalty { points tier tierSince cashbackBalance { amount } spendLast12Months { amount } }
  }
}
"""


async def test_orders_lift_the_customer_to_gold(platform: Platform) -> None:
    user = unique("buyer")

    def order(n: int, total: float, **extra: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "userId": user,
            "event": "Order Completed",
            "messageId": f"{user}-order-{n}",
            "properties": {"order_id": f"{user}-o{n}", "total": total, "currency": "EUR", **extra},
        }

    batch = [
        order(1, 700.0),
        order(2, 900.0, products=[{"product_id": "sku-1", "price": 900.0}]),
        {**order(2, 900.0), "messageId": f"{user}-order-2-resent"},  # the same order again
        {
            "type": "track",
            "userId": user,
            "event": "Order Refunded",
            "messageId": f"{user}-refund",
            "properties": {"order_id": f"{user}-o1", "total": 100},
        },
        {
            "type": "track",
            "userId": user,
            "event": "Points Redeemed",
            "messageId": f"{user}-redeem",
            "properties": {"points": 250},
        },
    ]
    response = await platform.send("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    await platform.wait_for_count(user, "Points Redeemed", 1)

    async def settled() -> bool:
        body = (await platform.graphql(QUERY, {"value": user})).json()
        customer = body["data"]["customer"]
        return bool(
            customer
            and customer["orders"]["orderCount"] == 2
            and customer["loyalty"]["tier"] == "Gold"
        )

    await eventually(settled, 30, "two orders and the Gold tier")
    customer = (await platform.graphql(QUERY, {"value": user})).json()["data"]["customer"]
    assert customer["orders"]["revenue"] == [{"currency": "EUR", "amount": 1500.0}]
    assert customer["orders"]["averageOrderValue"]["amount"] == 750.0
    assert customer["loyalty"]["points"] == 1500 - 250
    assert customer["loyalty"]["cashbackBalance"]["amount"] == 30.0
    assert customer["loyalty"]["spendLast12Months"]["amount"] == 1500.0
    assert customer["loyalty"]["tierSince"] is not None


async def test_consent_behaviour_and_engagement_in_the_360_view(platform: Platform) -> None:
    user = unique("engaged")
    calls = [
        {
            "type": "page",
            "userId": user,
            "name": "Home",
            "timestamp": "2026-11-01T10:00:00Z",
            "context": {"channel": "browser"},
        },
        {
            "type": "page",
            "userId": user,
            "name": "Shoes",
            "timestamp": "2026-11-01T10:05:00Z",
            "context": {"channel": "browser"},
        },
        {
            "type": "track",
            "userId": user,
            "event": "Email Opened",
            "timestamp": "2026-11-02T08:00:00Z",
        },
        {
            "type": "track",
            "userId": user,
            "event": "Product Added",
            "timestamp": "2026-11-01T10:06:00Z",
            "properties": {"product_id": "sku-1"},
            "context": {"device": {"type": "ios", "model": "iPhone15,2"}},
        },
        {
            "type": "track",
            "userId": user,
            "event": "Consent Updated",
            "timestamp": "2026-11-03T09:00:00Z",
            "properties": {"purpose": "email_marketing", "state": "granted"},
        },
        {
            "type": "track",
            "userId": user,
            "event": "Consent Updated",
            "timestamp": "2026-11-01T09:00:00Z",  # older, arrives later: does not win
            "properties": {"purpose": "email_marketing", "state": "denied"},
        },
    ]
    assert (await platform.send("/v1/batch", {"batch": calls})).status_code == 200
    await platform.wait_for_count(user, "Consent Updated", 2)
    query = """
    query($value: String!) {
      customer(by: {identifier: {type: "user_id", value: $value}}) {
        consent { purpose state source }
        consentHistory { state }
        behaviour { channels sources lastPage devices cartOpen }
        engagement { kind count lastAt }
        timeline(first: 2) { edges { node { name type } } pageInfo { hasNextPage endCursor } }
      }
    }
    """
    customer = (await platform.graphql(query, {"value": user})).json()["data"]["customer"]
    assert customer["consent"] == [
        {"purpose": "email_marketing", "state": "granted", "source": "http-api"}
    ]
    assert [c["state"] for c in customer["consentHistory"]] == ["denied", "granted"]
    assert customer["behaviour"] == {
        "channels": ["browser"],
        "sources": ["http-api"],
        "lastPage": "Shoes",
        "devices": ["ios/iPhone15,2"],
        "cartOpen": True,
    }
    assert [e["node"]["name"] for e in customer["timeline"]["edges"]] == [
        "Consent Updated",
        "Email Opened",
    ]  # newest first by the events' own time
    assert customer["timeline"]["pageInfo"]["hasNextPage"]
    assert customer["timeline"]["pageInfo"]["endCursor"]
    opened = next(e for e in customer["engagement"] if e["kind"] == "email_opened")
    assert opened["count"] == 1
    assert opened["lastAt"].startswith("2026-11-02T08:00:00")
