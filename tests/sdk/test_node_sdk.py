"""Segment's Node SDK (``@segment/analytics-node``, pinned in tests/sdk/node), unchanged, with
``host`` pointed at the gateway: every call type and a batch land in the customer's profile.
The SDK runs in node (tests/sdk/node/send.cjs); this side checks the effects over GraphQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import Stack
from tests.sdk.checks import GROUPS_QUERY, assert_alias_joined, counts, has_group, settled
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parent / "node" / "send.cjs"


async def run_node(
    stack: Stack, calls: list[tuple[str, dict[str, Any]]], max_events_in_batch: int = 1
) -> dict[str, Any]:
    """Send ``calls`` (method, arguments) with the SDK; fails unless every request it made was
    answered 2xx. Returns its report: requests (calls per request), responses, errors."""
    config = {
        "host": stack.gateway_url,
        "writeKey": stack.write_key,
        "maxEventsInBatch": max_events_in_batch,
        # Long enough that a batch fills before the timer, closeAndFlush sends the rest.
        "flushInterval": 10_000,
        "calls": calls,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        ["node", str(SCRIPT), json.dumps(config)],
        cwd=SCRIPT.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"node exited {done.returncode}: {done.stdout} {done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


async def test_identify_track_page(node_modules: Path, stack: Stack, platform: Platform) -> None:
    user_id = unique("node-user")
    report = await run_node(
        stack,
        [
            ("identify", {"userId": user_id, "traits": {"email": f"{user_id}@example.com"}}),
            ("track", {"userId": user_id, "event": "Cart Viewed", "properties": {"items": 2}}),
            ("track", {"userId": user_id, "event": "Cart Viewed", "properties": {"items": 3}}),
            ("page", {"userId": user_id, "category": "Shop", "name": "Checkout"}),
        ],
    )
    assert len(report["responses"]) == 4, report
    customer = await settled(
        platform,
        "user_id",
        user_id,
        lambda c: counts(c).get("Cart Viewed") == 2 and c["behaviour"]["lastPage"] == "Checkout",
        f"{user_id}: 2 x Cart Viewed and the Checkout page",
    )
    assert {"type": "email", "value": f"{user_id}@example.com"} in customer["identifiers"]


async def test_group_joins_the_customer_to_the_group(
    node_modules: Path, stack: Stack, platform: Platform
) -> None:
    user_id = unique("node-user")
    group_id = unique("node-org")
    await run_node(
        stack,
        [
            ("identify", {"userId": user_id, "traits": {"plan": "team"}}),
            ("group", {"userId": user_id, "groupId": group_id, "traits": {"name": "Globex"}}),
        ],
    )
    await settled(
        platform,
        "user_id",
        user_id,
        lambda c: has_group(c, group_id, {"name": "Globex"}),
        f"{user_id} in group {group_id} with its traits",
        GROUPS_QUERY,
    )


async def test_alias_joins_the_previous_id_to_the_user(
    node_modules: Path, stack: Stack, platform: Platform
) -> None:
    previous = unique("node-anon")
    user_id = unique("node-user")
    # One batch: the alias may be processed before or after the history it joins.
    await run_node(
        stack,
        [
            ("page", {"anonymousId": previous, "name": "Pricing"}),
            ("track", {"anonymousId": previous, "event": "Trial Started"}),
            ("alias", {"previousId": previous, "userId": user_id}),
            ("track", {"userId": user_id, "event": "Subscribed"}),
        ],
        max_events_in_batch=10,
    )
    await assert_alias_joined(platform, user_id, previous)


async def test_batch_sent_together(node_modules: Path, stack: Stack, platform: Platform) -> None:
    user_id = unique("node-user")
    anonymous_id = unique("node-anon")
    report = await run_node(
        stack,
        [
            ("page", {"anonymousId": anonymous_id, "name": "Landing"}),
            ("track", {"anonymousId": anonymous_id, "event": "Video Played"}),
            ("identify", {"userId": user_id, "anonymousId": anonymous_id, "traits": {"a": 1}}),
            *[("track", {"userId": user_id, "event": "Song Played"}) for _ in range(3)],
        ],
        max_events_in_batch=10,
    )
    assert sum(r["calls"] for r in report["requests"]) == 6, report
    assert max(r["calls"] for r in report["requests"]) > 1, report
    customer = await settled(
        platform,
        "user_id",
        user_id,
        lambda c: counts(c) == {"Song Played": 3, "Video Played": 1},
        f"{user_id} with its anonymous history and 3 x Song Played",
    )
    assert {"type": "anonymous_id", "value": anonymous_id} in customer["identifiers"]
    assert customer["behaviour"]["lastPage"] == "Landing"
    assert customer["traits"] == {"a": 1}
