"""Driving the running platform the way a user does: the ingest API and GraphQL over HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from infra.local.stack import Stack
from tests.support.kafka import eventually

# Load runs offer more than the default per-key ingest rate limit on purpose.
UNLIMITED_INGEST = {
    "LODESTAR_INGEST_RATE_LIMIT_PER_S": "1000000",
    "LODESTAR_INGEST_RATE_LIMIT_BURST": "1000000",
}

CUSTOMER_QUERY = """
query Customer($type: String!, $value: String!) {
  customer(by: {identifier: {type: $type, value: $value}}) {
    id
    identifiers { type value }
    traits
    eventCounts { name count }
    firstSeen
    lastSeen
  }
}
"""


class Platform:
    """An HTTP client of one running stack."""

    def __init__(self, stack: Stack, client: httpx.AsyncClient) -> None:
        self.stack = stack
        self.client = client

    async def send(self, path: str, body: Any) -> httpx.Response:
        """POST to the ingest API with the write key."""
        return await self.client.post(
            f"{self.stack.gateway_url}{path}", json=body, auth=(self.stack.write_key, "")
        )

    async def graphql(
        self, query: str, variables: dict[str, Any] | None = None, api_key: str | None = None
    ) -> httpx.Response:
        """POST a GraphQL query with the API key (or the given one; "" sends no header)."""
        key = self.stack.api_key if api_key is None else api_key
        return await self.client.post(
            f"{self.stack.gateway_url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )

    async def customer(self, type_: str, value: str) -> dict[str, Any] | None:
        """The ``customer`` query by identifier; fails on GraphQL errors."""
        response = await self.graphql(CUSTOMER_QUERY, {"type": type_, "value": value})
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        customer: dict[str, Any] | None = body["data"]["customer"]
        return customer

    async def wait_for_count(
        self, user_id: str, event: str, count: int, timeout_s: float = 30
    ) -> dict[str, Any]:
        """Poll GraphQL until the customer shows ``count`` of ``event``."""
        found: dict[str, Any] = {}

        async def reached() -> bool:
            customer = await self.customer("user_id", user_id)
            counts = {c["name"]: c["count"] for c in (customer or {}).get("eventCounts", [])}
            if customer is not None:
                found.update(customer)
            return bool(counts.get(event, 0) >= count)

        await eventually(reached, timeout_s, f"{user_id} showing {count} x {event}", 0.2)
        return found

    async def known_customer(self, user_id: str, **traits: Any) -> str:
        """Identify ``user_id`` through the ingest API and wait until the platform knows the
        customer; returns the customer id."""
        response = await self.send(
            "/v1/identify",
            {"userId": user_id, "traits": traits, "messageId": f"{user_id}-identify"},
        )
        assert response.status_code == 200, response.text
        found: dict[str, Any] = {}

        async def known() -> bool:
            customer = await self.customer("user_id", user_id)
            if customer is not None:
                found.update(customer)
            return customer is not None

        await eventually(known, 30, f"customer {user_id}", 0.2)
        return str(found["id"])
