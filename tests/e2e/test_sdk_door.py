"""The ingest door as Segment's SDKs call it, against the running platform: the browser's
text/plain short routes with the key in the body, gzipped batches, and batches whose bad
calls are dropped while the good ones land."""

from __future__ import annotations

import gzip
import json

import pytest

from infra.local.stack import Stack
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


async def test_the_browser_sdk_shape_lands(platform: Platform, stack: Stack) -> None:
    user_id = unique("browser")
    body = {
        "type": "track",
        "userId": user_id,
        "event": "Browser Viewed",
        "writeKey": stack.write_key,
        "messageId": f"ajs-next-{user_id}",
        "integrations": {"All": True},
        "_metadata": {"bundled": ["Segment.io"]},
    }
    response = await platform.client.post(
        f"{stack.gateway_url}/v1/t",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    batch = {
        "writeKey": stack.write_key,
        "batch": [{**body, "messageId": f"ajs-next-{user_id}-{n}"} for n in range(2)],
        "sentAt": "2026-01-01T00:00:00Z",
    }
    response = await platform.client.post(
        f"{stack.gateway_url}/v1/b",
        content=json.dumps(batch).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    await platform.wait_for_count(user_id, "Browser Viewed", 3)


async def test_a_gzipped_batch_lands(platform: Platform, stack: Stack) -> None:
    user_id = unique("gzip")
    calls = [{"type": "track", "userId": user_id, "event": "Zipped"} for _ in range(4)]
    response = await platform.client.post(
        f"{stack.gateway_url}/v1/batch",
        content=gzip.compress(json.dumps({"batch": calls}).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        auth=(stack.write_key, ""),
    )
    assert response.status_code == 200, response.text
    await platform.wait_for_count(user_id, "Zipped", 4)


async def test_a_batch_keeps_its_good_calls(platform: Platform) -> None:
    user_id = unique("partial")
    batch = [
        {"type": "track", "userId": user_id, "event": "Kept"},
        {"type": "track", "userId": user_id, "event": "Dropped", "messageId": "x" * 101},
        {"type": "track", "userId": user_id, "event": "Kept"},
    ]
    response = await platform.send("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert [r["path"] for r in response.json()["rejected"]] == ["batch[1].messageId"]
    await platform.wait_for_count(user_id, "Kept", 2)
    # Sent after the batch, so once it shows, the dropped call would have shown too.
    assert (
        await platform.send("/v1/track", {"userId": user_id, "event": "Marker"})
    ).status_code == 200
    customer = await platform.wait_for_count(user_id, "Marker", 1)
    counts = {c["name"]: c["count"] for c in customer["eventCounts"]}
    assert "Dropped" not in counts
    assert counts["Kept"] == 2
