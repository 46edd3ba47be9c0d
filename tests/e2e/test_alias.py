"""Alias through the ingest API: an anonymous visitor's history joins the customer."""

from __future__ import annotations

import pytest

from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


async def test_alias_joins_the_anonymous_history_to_the_customer(platform: Platform) -> None:
    anonymous = unique("visitor")
    user_id = unique("user")
    for n in range(2):
        viewed = await platform.send(
            "/v1/track",
            {
                "anonymousId": anonymous,
                "event": "Product Viewed",
                "messageId": f"{anonymous}-view-{n}",
            },
        )
        assert viewed.status_code == 200
    customer_id = await platform.known_customer(user_id, plan="gold")
    visitor = await platform.customer("anonymous_id", anonymous)
    assert visitor is not None
    assert visitor["id"] != customer_id  # nothing links them yet

    aliased = await platform.send(
        "/v1/alias", {"previousId": anonymous, "userId": user_id, "messageId": f"{user_id}-a"}
    )
    assert aliased.status_code == 200, aliased.text

    customer = await platform.wait_for_count(user_id, "Product Viewed", 2)
    assert {"type": "anonymous_id", "value": anonymous} in customer["identifiers"]
    assert customer["traits"] == {"plan": "gold"}

    async def joined() -> bool:
        found = await platform.customer("anonymous_id", anonymous)
        return found is not None and found["id"] == customer["id"]

    await eventually(joined, 30, "the anonymous id answering with the customer", 0.2)
