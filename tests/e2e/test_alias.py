"""Alias through the ingest API: an anonymous visitor's history joins the customer."""

from __future__ import annotations

from typing import Any

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

    async def visitor_known() -> bool:
        # The visitor's events travel under another key than the identify: wait for them.
        return await platform.customer("anonymous_id", anonymous) is not None

    await eventually(visitor_known, 30, "the anonymous visitor", 0.2)
    visitor = await platform.customer("anonymous_id", anonymous)
    assert visitor is not None
    assert visitor["id"] != customer_id  # nothing links them yet

    aliased = await platform.send(
        "/v1/alias", {"previousId": anonymous, "userId": user_id, "messageId": f"{user_id}-a"}
    )
    assert aliased.status_code == 200, aliased.text

    # The visitor's customer is the older one, so it survives: wait until the profile merge
    # brought the user's traits over too.
    found: dict[str, Any] = {}

    async def joined() -> bool:
        customer = await platform.customer("user_id", user_id)
        if customer is None:
            return False
        found.update(customer)
        counts = {c["name"]: c["count"] for c in customer["eventCounts"]}
        return counts.get("Product Viewed") == 2 and customer["traits"] == {"plan": "gold"}

    await eventually(joined, 30, "the visitor's history and the user's traits together", 0.2)
    assert {"type": "anonymous_id", "value": anonymous} in found["identifiers"]
    assert {"type": "user_id", "value": user_id} in found["identifiers"]
    by_anonymous = await platform.customer("anonymous_id", anonymous)
    assert by_anonymous is not None
    assert by_anonymous["id"] == found["id"]
