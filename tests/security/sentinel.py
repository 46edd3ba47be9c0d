"""A customer that hostile input must never change: planted through the ingest API, read
back through GraphQL, compared after the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from infra.local.stack import Stack
from tests.support.kafka import unique
from tests.support.platform import Platform


@dataclass
class Sentinel:
    """The planted customer's ids and how GraphQL showed it after planting."""

    user_id: str
    message_ids: list[str]
    view: dict[str, Any]

    async def changes(self, stack: Stack) -> list[str]:
        """How the customer differs now from when it was planted."""
        now = await _view(stack, self.user_id)
        if now is None:
            return [f"sentinel {self.user_id} is gone"]
        return [
            f"sentinel {key} changed: {self.view.get(key)!r} -> {now.get(key)!r}"
            for key in sorted(set(self.view) | set(now))
            if key != "lastSeen" and self.view.get(key) != now.get(key)
        ]


async def _view(stack: Stack, user_id: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(timeout=30) as client:
        customer = await Platform(stack, client).customer("user_id", user_id)
    if customer is None:
        return None
    customer["identifiers"] = sorted(customer["identifiers"], key=lambda i: (i["type"], i["value"]))
    customer["eventCounts"] = sorted(customer["eventCounts"], key=lambda c: c["name"])
    return customer


async def plant_sentinel(stack: Stack) -> Sentinel:
    """Identify and track a fresh customer with known message ids; wait until it shows."""
    user_id = unique("sentinel")
    message_ids = [f"{user_id}-identify", f"{user_id}-track"]
    async with httpx.AsyncClient(timeout=30) as client:
        platform = Platform(stack, client)
        identify = await platform.send(
            "/v1/identify",
            {
                "userId": user_id,
                "messageId": message_ids[0],
                "traits": {"email": f"{user_id}@sentinel.example", "plan": "gold"},
            },
        )
        assert identify.status_code == 200, identify.text
        track = await platform.send(
            "/v1/track",
            {"userId": user_id, "messageId": message_ids[1], "event": "Sentinel Planted"},
        )
        assert track.status_code == 200, track.text
        await platform.wait_for_count(user_id, "Sentinel Planted", 1)
    view = await _view(stack, user_id)
    assert view is not None
    return Sentinel(user_id, message_ids, view)
