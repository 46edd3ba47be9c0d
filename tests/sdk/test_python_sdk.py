"""Segment's Python SDK (``segment-analytics-python``), unchanged, with ``gzip=True`` and
``host`` pointed at the gateway: every call type and a batch flushed together land in the
customer's profile."""

from __future__ import annotations

import asyncio
import gzip
import json
from types import ModuleType
from typing import Any

import pytest

from infra.local.stack import Stack
from tests.sdk.checks import GROUPS_QUERY, assert_alias_joined, counts, has_group, settled
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


def sync_client(sdk: ModuleType, stack: Stack, compress: bool = True) -> Any:
    """A client that posts each call as it is made and raises on any non-2xx answer."""
    return sdk.Client(
        stack.write_key, host=stack.gateway_url, gzip=compress, sync_mode=True, max_retries=0
    )


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
async def test_identify_track_page(
    segment_analytics: ModuleType, stack: Stack, platform: Platform, compress: bool
) -> None:
    user_id = unique("py-user")
    client = sync_client(segment_analytics, stack, compress)

    def send() -> None:
        client.identify(user_id, {"email": f"{user_id}@example.com", "plan": "gold"})
        for n in range(2):
            client.track(user_id, "Product Viewed", {"product_id": f"sku-{n}"})
        client.page(user_id, "Docs", "Pricing", {"path": "/pricing"})

    await asyncio.to_thread(send)
    customer = await settled(
        platform,
        "user_id",
        user_id,
        lambda c: counts(c).get("Product Viewed") == 2 and c["behaviour"]["lastPage"] == "Pricing",
        f"{user_id}: 2 x Product Viewed and the Pricing page",
    )
    assert customer["traits"]["plan"] == "gold"
    assert {"type": "email", "value": f"{user_id}@example.com"} in customer["identifiers"]


async def test_group_joins_the_customer_to_the_group(
    segment_analytics: ModuleType, stack: Stack, platform: Platform
) -> None:
    user_id = unique("py-user")
    group_id = unique("py-org")
    client = sync_client(segment_analytics, stack)

    def send() -> None:
        client.identify(user_id, {"plan": "team"})
        client.group(user_id, group_id, {"name": "Acme Rockets", "employees": 120})

    await asyncio.to_thread(send)
    await settled(
        platform,
        "user_id",
        user_id,
        lambda c: has_group(c, group_id, {"name": "Acme Rockets", "employees": 120}),
        f"{user_id} in group {group_id} with its traits",
        GROUPS_QUERY,
    )


async def test_alias_joins_the_previous_id_to_the_user(
    segment_analytics: ModuleType, stack: Stack, platform: Platform
) -> None:
    previous = unique("py-anon")
    user_id = unique("py-user")
    client = sync_client(segment_analytics, stack)

    def send() -> None:
        client.page(anonymous_id=previous, name="Pricing")
        client.track(event="Trial Started", anonymous_id=previous)
        client.alias(previous, user_id)
        client.track(user_id, "Subscribed")

    await asyncio.to_thread(send)
    await assert_alias_joined(platform, user_id, previous)


async def test_batch_flushed_together(
    segment_analytics: ModuleType, stack: Stack, platform: Platform
) -> None:
    user_id = unique("py-user")
    anonymous_id = unique("py-anon")
    failures: list[str] = []
    sent: list[tuple[int, int]] = []  # (status, calls in the request) per request

    def record(response: Any, *args: Any, **kwargs: Any) -> None:
        body = json.loads(gzip.decompress(response.request.body))
        sent.append((response.status_code, len(body["batch"])))

    # Queued and uploaded by the SDK's consumer thread, up to 10 calls a request.
    client = segment_analytics.Client(
        stack.write_key,
        host=stack.gateway_url,
        gzip=True,
        upload_size=10,
        upload_interval=2.0,
        max_retries=0,
        on_error=lambda error, batch: failures.append(f"{error!r} ({len(batch)} calls)"),
    )
    session = segment_analytics.request._session
    session.hooks["response"].append(record)

    def send() -> None:
        client.page(anonymous_id=anonymous_id, name="Landing")
        client.track(event="Newsletter Opened", anonymous_id=anonymous_id)
        client.identify(user_id, {"plan": "basic"}, anonymous_id=anonymous_id)
        for n in range(3):
            client.track(user_id, "Article Read", {"n": n})
        client.flush()
        client.join()

    try:
        await asyncio.to_thread(send)
    finally:
        session.hooks["response"].remove(record)
    assert failures == []
    assert sum(calls for _, calls in sent) == 6, sent
    assert all(status == 200 for status, _ in sent), sent
    assert max(calls for _, calls in sent) > 1, f"no request carried several calls: {sent}"
    customer = await settled(
        platform,
        "user_id",
        user_id,
        lambda c: counts(c) == {"Article Read": 3, "Newsletter Opened": 1},
        f"{user_id} with its anonymous history and 3 x Article Read",
    )
    assert customer["traits"]["plan"] == "basic"
    assert {"type": "anonymous_id", "value": anonymous_id} in customer["identifiers"]
    assert customer["behaviour"]["lastPage"] == "Landing"
