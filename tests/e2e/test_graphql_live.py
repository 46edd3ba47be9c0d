"""GraphQL subscriptions over a real WebSocket against the running stack: the key in
``connection_init`` (no header needed; 4403 without it, 4401 when subscribing first), a
change sent through the ingest API arriving as ``customerChanged``, a segment entry, a pass
installed from the PassKit door, the limit of subscriptions per connection, hostile
messages, and a slow subscriber dropped while a fast one keeps receiving."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from infra.local.stack import DEV_PASS_TYPE_ID, Stack
from lodestar.v1 import (
    events_pb2,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.platform import topics
from tests.support.kafka import unique
from tests.support.platform import Platform
from tests.support.websocket import Closed, WebSocketClient

pytestmark = pytest.mark.e2e

CHANGED = (
    "subscription C($id: ID!) { customerChanged(id: $id) { customerId changedFields eventId } }"
)
MEMBERSHIP = (
    "subscription S($id: ID!) { segmentMembership(segmentId: $id) { customerId change at } }"
)
PASSES = (
    "subscription P($id: ID!) { passEvents(customerId: $id) "
    "{ customerId serialNumber platform kind at } }"
)
# How long one attempt waits for the event before the action is repeated (the subscription
# may not have been registered yet when the first one happened).
ATTEMPT_S = 10.0


async def connected(stack: Stack, **kwargs: Any) -> WebSocketClient:
    """A connection acknowledged with the stack's key sent in connection_init."""
    client = await WebSocketClient.connect(stack.gateway_url, **kwargs)
    ack = await client.init({"authorization": f"Bearer {stack.api_key}"})
    assert ack == {"type": "connection_ack"}, ack
    return client


async def until_next(
    client: WebSocketClient,
    action: Callable[[], Awaitable[None]],
    wanted: Callable[[dict[str, Any]], bool],
    attempts: int = 6,
) -> dict[str, Any]:
    """Do ``action`` and return the first ``next`` payload data ``wanted`` accepts; repeat
    the action when none came (a hang guard, not a timing check)."""
    for _ in range(attempts):
        await action()
        try:
            async with asyncio.timeout(ATTEMPT_S):
                while True:
                    message = await client.receive_json()
                    assert message["type"] == "next", message
                    assert "errors" not in message["payload"], message
                    data: dict[str, Any] = message["payload"]["data"]
                    if wanted(data):
                        return data
        except TimeoutError:
            continue
    raise AssertionError("the subscribed event never arrived")


# --- the door ---


@pytest.mark.parametrize(
    "payload",
    [{}, {"authorization": "Bearer wrong_key_12345"}, {"apiKey": "wrong_key_12345"}],
    ids=["no-key", "wrong-bearer", "wrong-api-key"],
)
async def test_connection_init_without_a_valid_key_is_closed_4403(
    stack: Stack, payload: dict[str, str]
) -> None:
    client = await WebSocketClient.connect(stack.gateway_url)
    assert client.accepted_subprotocol == "graphql-transport-ws"
    await client.send_json({"type": "connection_init", "payload": payload})
    assert (await client.closed()).code == 4403
    await client.close()


async def test_the_key_in_connection_init_is_enough_without_any_header(stack: Stack) -> None:
    for payload in ({"authorization": f"Bearer {stack.api_key}"}, {"apiKey": stack.api_key}):
        client = await WebSocketClient.connect(stack.gateway_url)
        assert await client.init(payload) == {"type": "connection_ack"}
        await client.subscribe("1", "{ __typename }")
        assert await client.receive_json() == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"__typename": "Query"}},
        }
        await client.close()


async def test_subscribe_before_connection_init_is_closed_4401(stack: Stack) -> None:
    client = await WebSocketClient.connect(stack.gateway_url)
    await client.subscribe("1", CHANGED, id="anyone")
    assert (await client.closed()).code == 4401
    await client.close()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", 4400),
        ('{"type": "subscribe", "id": 7, "payload": {"query": "{ __typename }"}}', 4400),
        ('{"type": "subscribe", "id": "1", "payload": "' + "a" * 1000 + '"}', 4400),
        ('{"type": "subscribe", "id": "1", "payload": {"query": "' + " " * 70_000 + '"}}', 1009),
    ],
    ids=["not-json", "numeric-id", "string-payload", "too-big"],
)
async def test_hostile_messages_close_the_socket_with_a_code(
    stack: Stack, platform: Platform, text: str, code: int
) -> None:
    client = await connected(stack)
    await client.send_text(text)
    closed = await client.closed()
    assert closed.code == code
    assert "aaaaaaaaaa" not in closed.reason
    await client.close()
    # The gateway keeps serving.
    assert (await platform.graphql("{ __typename }")).status_code == 200


async def test_a_huge_id_is_refused_without_being_echoed(stack: Stack) -> None:
    client = await connected(stack)
    await client.subscribe("1", CHANGED, id="z" * 5_000)
    message = await client.receive_json()
    [error] = message["payload"]["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "zzzz" not in error["message"]
    assert await client.receive_json() == {"id": "1", "type": "complete"}
    await client.close()


async def test_one_subscription_over_the_limit_is_refused_naming_it(stack: Stack) -> None:
    client = await connected(stack)
    for n in range(10):
        await client.subscribe(str(n), CHANGED, id=unique("idle"))
    await client.subscribe("10", CHANGED, id=unique("idle"))
    refused = await client.receive_json()
    assert refused["id"] == "10"
    assert refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
    assert "at most 10 subscriptions" in refused["payload"][0]["message"]
    await client.close()


# --- events arriving ---


async def test_a_change_sent_to_the_ingest_api_arrives_as_customer_changed(
    platform: Platform,
) -> None:
    user = unique("live")
    customer_id = await platform.known_customer(user, plan="basic")
    client = await connected(platform.stack)
    await client.subscribe("c", CHANGED, id=customer_id)
    sent = 0

    async def identify() -> None:
        nonlocal sent
        sent += 1
        response = await platform.send(
            "/v1/identify",
            {"userId": user, "traits": {"plan": f"pro{sent}"}, "messageId": f"{user}-{sent}"},
        )
        assert response.status_code == 200

    data = await until_next(client, identify, lambda d: d["customerChanged"] is not None)
    change = data["customerChanged"]
    assert change["customerId"] == customer_id
    assert "traits.plan" in change["changedFields"]
    await client.close()


async def test_a_customer_entering_a_segment_arrives_on_segment_membership(
    platform: Platform, stack: Stack
) -> None:
    tag = unique("seg").replace("-", "")
    user, segment_id = f"u{tag}", f"live-{tag}"
    customer_id = await platform.known_customer(user, plan="none")
    async with stack.grpc_channel("segmentation") as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        rule = {"field": "traits.plan", "op": "eq", "value": tag}
        await stub.CreateSegment(
            segmentation_pb2.CreateSegmentRequest(
                id=segment_id, name=segment_id, rule_json=json.dumps(rule)
            )
        )
    client = await connected(stack)
    await client.subscribe("s", MEMBERSHIP, id=segment_id)
    toggles = 0

    async def enter() -> None:
        # Out, then in again: every attempt makes an entry.
        nonlocal toggles
        for plan in ("none", tag):
            toggles += 1
            response = await platform.send(
                "/v1/identify",
                {"userId": user, "traits": {"plan": plan}, "messageId": f"{user}-{toggles}"},
            )
            assert response.status_code == 200

    data = await until_next(client, enter, lambda d: d["segmentMembership"]["change"] == "ENTERED")
    assert data["segmentMembership"]["customerId"] == customer_id
    assert data["segmentMembership"]["at"]
    await client.close()


async def test_a_device_registration_arrives_as_an_installed_pass_event(
    platform: Platform, stack: Stack
) -> None:
    customer_id = await platform.known_customer(unique("holder"))
    async with stack.grpc_channel("wallet") as channel:
        issued = await wallet_pb2_grpc.WalletServiceStub(channel).IssuePass(
            wallet_pb2.IssuePassRequest(
                customer_id=customer_id, kind=wallet_pb2.PASS_KIND_STORE_CARD
            )
        )
    client = await connected(stack)
    await client.subscribe("p", PASSES, id=customer_id)
    path = f"/v1/devices/livedevice/registrations/{DEV_PASS_TYPE_ID}/{issued.serial_number}"
    headers = {"Authorization": f"ApplePass {issued.authentication_token}"}
    async with httpx.AsyncClient(base_url=issued.web_service_url, timeout=10) as phone:

        async def register() -> None:
            # Unregister first, so every attempt is a new installation.
            assert (await phone.delete(path, headers=headers)).status_code == 200
            registered = await phone.post(path, json={"pushToken": "livetoken"}, headers=headers)
            assert registered.status_code == 201

        data = await until_next(client, register, lambda d: d["passEvents"]["kind"] == "INSTALLED")
        installed = data["passEvents"]
        assert installed["customerId"] == customer_id
        assert installed["serialNumber"] == issued.serial_number
        assert installed["platform"] == "APPLE"

        async def unregister() -> None:
            assert (await phone.delete(path, headers=headers)).status_code == 200

        data = await until_next(client, unregister, lambda d: d["passEvents"]["kind"] == "REMOVED")
        assert data["passEvents"]["serialNumber"] == issued.serial_number
    await client.close()


# --- a slow subscriber ---


def big_change(customer_id: str, n: int) -> bytes:
    """A change naming many fields (about 16 KB), so a few hundred fill any socket buffer."""
    paths = [f"traits.field_{n}_{i}_{'x' * 24}" for i in range(400)]
    change = events_pb2.ProfileChanged(
        event_id=f"big-{n}", customer_id=customer_id, changed_paths=paths
    )
    return change.SerializeToString()


async def test_a_slow_subscriber_is_dropped_while_a_fast_one_keeps_receiving(
    stack: Stack,
) -> None:
    customer_id = unique("watched")
    # The slow client never reads while the burst goes out; its socket buffers stay small.
    slow = await connected(stack, receive_buffer=4096)
    fast = await connected(stack)
    await slow.subscribe("s", CHANGED, id=customer_id)
    await fast.subscribe("f", CHANGED, id=customer_id)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        probes = 0

        async def probe() -> None:
            nonlocal probes
            probes += 1
            await producer.send_and_wait(
                topics.PROFILE_CHANGED,
                events_pb2.ProfileChanged(
                    event_id=f"probe-{probes}", customer_id=customer_id, changed_paths=["p"]
                ).SerializeToString(),
                key=customer_id.encode(),
            )

        # Both subscriptions are registered once each has seen a probe.
        await until_next(fast, probe, lambda d: True)
        await until_next(slow, probe, lambda d: True)
        burst = 600
        for n in range(burst):
            await producer.send(
                topics.PROFILE_CHANGED, big_change(customer_id, n), key=customer_id.encode()
            )
        await producer.flush()

        # The fast subscriber receives the whole burst, to the last event.
        async with asyncio.timeout(120):
            while True:
                message = await fast.receive_json()
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message["payload"]
                if message["payload"]["data"]["customerChanged"]["eventId"] == f"big-{burst - 1}":
                    break
    finally:
        await producer.stop()

    # The slow one gets what was already on its way, then the news that it was dropped.
    received, ending = 0, None
    async with asyncio.timeout(120):
        while ending is None:
            message = await slow.receive()
            assert not isinstance(message, Closed), message
            if message["type"] == "next" and "errors" in message["payload"]:
                ending = message["payload"]["errors"][0]
            elif message["type"] == "next":
                received += 1
    assert ending["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"
    assert "fell behind" in ending["message"]
    assert received < burst
    assert await slow.receive_json() == {"id": "s", "type": "complete"}
    await slow.close()
    await fast.close()
