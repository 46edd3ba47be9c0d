"""Group calls through the ingest API: the account is its own entity, shown in GraphQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

QUERY = """
query($id: ID!) {
  customer(by: {id: $id}) {
    traits groups { edges { node { id traits memberCount createdAt } } }
  }
}
"""


async def test_group_calls_make_an_account_the_customers_belong_to(platform: Platform) -> None:
    group_id = unique("acme")
    ada, bob = unique("ada"), unique("bob")
    ada_id = await platform.known_customer(ada, plan="gold")
    bob_id = await platform.known_customer(bob)
    for user_id, traits in ((ada, {"name": "Acme Inc", "plan": "pro"}), (bob, {"seats": 40})):
        response = await platform.send(
            "/v1/group", {"userId": user_id, "groupId": group_id, "traits": traits}
        )
        assert response.status_code == 200, response.text

    found: dict[str, Any] = {}

    async def both_linked() -> bool:
        reply = await platform.graphql(QUERY, {"id": ada_id})
        body = reply.json()
        assert "errors" not in body, body["errors"]
        found.update(body["data"]["customer"])
        groups = [e["node"] for e in found["groups"]["edges"]]
        # The identify and the group calls fold in one batch maybe: wait for both.
        ready = bool(groups) and groups[0]["memberCount"] == 2 and "seats" in groups[0]["traits"]
        return ready and found["traits"] == {"plan": "gold"}

    await eventually(both_linked, 30, "the group with both members", 0.2)
    [group] = [e["node"] for e in found["groups"]["edges"]]
    assert group["id"] == group_id
    assert group["traits"] == {"name": "Acme Inc", "plan": "pro", "seats": 40}
    assert group["createdAt"] is not None
    assert "name" not in found["traits"]  # the group's traits stay the group's
    bob_view = (await platform.graphql(QUERY, {"id": bob_id})).json()["data"]["customer"]
    assert [e["node"]["id"] for e in bob_view["groups"]["edges"]] == [group_id]
