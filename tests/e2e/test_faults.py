"""Bad input and crashes against the running platform: nothing rejected is produced, poison
goes to the dead-letter topic, and a killed profile service (restarted by the stack's
supervisor) loses and doubles nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from infra.local.stack import Stack
from lodestar.v1 import events_pb2
from services.platform import topics
from tests.support.kafka import eventually, group_lag, read_all, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


def too_big(user_id: str, size: int) -> dict[str, Any]:
    return {"userId": user_id, "event": "Big", "properties": {"blob": "x" * size}}


async def test_rejected_requests_produce_nothing(platform: Platform, stack: Stack) -> None:
    tag = unique("rejected")
    url = f"{stack.gateway_url}/v1"
    wk = (stack.write_key, "")
    c = platform.client
    cases: list[tuple[httpx.Response, int, str]] = [
        (await c.post(f"{url}/track", content=b"{not json", auth=wk), 400, "malformed_json"),
        (
            await c.post(f"{url}/track", json={"event": "E", "properties": {"t": tag}}, auth=wk),
            400,
            "invalid_event",
        ),
        (
            await c.post(f"{url}/track", json={"userId": 42, "event": tag}, auth=wk),
            400,
            "invalid_event",
        ),
        (
            await c.post(f"{url}/track", json=too_big(tag, 33 * 1024), auth=wk),
            400,
            "payload_too_large",
        ),
        (
            await c.post(
                f"{url}/batch",
                json={
                    "batch": [
                        too_big(f"{tag}-{i}", 30 * 1024) | {"type": "track"} for i in range(18)
                    ]
                },
                auth=wk,
            ),
            400,
            "payload_too_large",
        ),
        (
            await c.post(f"{url}/track", json={"userId": tag, "event": "E"}, auth=("nope", "")),
            401,
            "unauthorized",
        ),
        (await c.post(f"{url}/track", json={"userId": tag, "event": "E"}), 401, "unauthorized"),
        (
            await c.post(
                f"{url}/batch",
                json={
                    # Only bad calls: a batch with good ones would accept those.
                    "batch": [
                        {"type": "track", "userId": tag, "event": ""},
                        {"type": "track", "userId": tag, "event": 7},
                        {"type": "track", "userId": tag},
                    ]
                },
                auth=wk,
            ),
            400,
            "invalid_event",
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["success"] is False
        assert response.json()["error"]["code"] == code
    batch_error = cases[-1][0].json()["error"]
    assert batch_error["path"] == "batch[0].event"
    assert "batch[0]" in batch_error["message"]

    # A good event after the bad ones: once it is on the topic, nothing tagged before it is.
    assert (
        await platform.send("/v1/track", {"userId": f"{tag}-ok", "event": "Ok"})
    ).status_code == 200
    records = await read_all(stack.kafka_bootstrap, topics.EVENTS_RAW)
    raw = [events_pb2.Event.FromString(r.value) for r in records if r.value]
    tagged = [e for e in raw if any(tag in i.value for i in e.identifiers) or e.name == tag]
    assert [e.name for e in tagged] == ["Ok"]


async def test_poison_on_raw_topic_is_dead_lettered_and_identity_goes_on(
    platform: Platform, stack: Stack
) -> None:
    poison = b"\x08\x96\x01 definitely not an Event " + unique("p").encode()
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.EVENTS_RAW, key=b"poison", value=poison)
    finally:
        await producer.stop()
    user_id = unique("after-poison")
    assert (await platform.send("/v1/track", {"userId": user_id, "event": "Ok"})).status_code == 200
    await platform.wait_for_count(user_id, "Ok", 1)

    async def dead_lettered() -> bool:
        letters = [
            events_pb2.DeadLetter.FromString(r.value)
            for r in await read_all(stack.kafka_bootstrap, topics.DEADLETTER)
        ]
        mine = [x for x in letters if x.value == poison]
        return (
            len(mine) == 1
            and mine[0].consumer_group == "identity"
            and ("could not decode" in mine[0].reason or "no usable identifier" in mine[0].reason)
        )

    await eventually(dead_lettered, 20, "the poison message on the dead-letter topic")


async def test_kill_9_profile_while_events_stream_loses_and_doubles_nothing(
    platform: Platform, stack: Stack
) -> None:
    """The supervisor restarts the killed service by itself; the rest keeps serving."""
    user_id = unique("crash")
    restarts = stack.restarts("profile")
    total, per_request = 1_000, 20
    killed = asyncio.Event()

    async def stream() -> None:
        for start in range(0, total, per_request):
            batch = [
                {
                    "type": "track",
                    "userId": user_id,
                    "event": "Crash Test",
                    "messageId": f"{user_id}-{n}",
                }
                for n in range(start, start + per_request)
            ]
            response = await platform.send("/v1/batch", {"batch": batch})
            assert response.status_code == 200, response.text
            if start == 300:
                # Let profile get busy with this customer, then pull the plug.
                await eventually(lambda: _counted_some(platform, user_id), 30, "profile busy")
                await asyncio.to_thread(stack.kill, "profile")
                killed.set()

    await stream()
    assert killed.is_set()
    await asyncio.to_thread(stack.wait_running, "profile", 120)
    assert stack.restarts("profile") == restarts + 1
    assert "profile" not in stack.dead_processes()  # killed on purpose: no crash
    customer = await platform.wait_for_count(user_id, "Crash Test", total, timeout_s=120)

    async def drained() -> bool:
        return await group_lag(stack.kafka_bootstrap, "profile", topics.EVENTS_RESOLVED) == 0

    await eventually(drained, 60, "profile consumer caught up", 0.5)
    customer = await platform.customer("user_id", user_id) or {}
    counts = {c["name"]: c["count"] for c in customer["eventCounts"]}
    assert counts == {"Crash Test": total}, json.dumps(counts)


async def _counted_some(platform: Platform, user_id: str) -> bool:
    customer = await platform.customer("user_id", user_id)
    return bool(customer and customer["eventCounts"])
