"""The GraphQL WebSocket door (graphql-transport-ws), spoken in ASGI to the app directly:
the upgrade needs no header, the key comes in ``connection_init`` (4403 without a valid one),
malformed or early messages close the socket with a code, a connection runs at most so many
subscriptions, the server pings, and subscriptions deliver what the live hub dispatches (a
subscriber that falls behind ends with SUBSCRIBER_TOO_SLOW).

The hub is not started (no Kafka): events are handed to it with ``dispatch``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from gateway.app import GraphQLDoor, LodestarGraphQL
from gateway.clients import ServiceClients
from gateway.keys import ApiKeys
from gateway.limits import LimitRequestSize
from gateway.live import CustomerChange, LiveHub, MembershipChange, PassChange, Watch
from gateway.live_ws import KeyVerifier
from gateway.ratelimit import RateLimiter
from gateway.schema import build_schema
from gateway.scopes import Principal, Scope
from gateway.settings import GatewaySettings
from tests.support.asgi_websocket import AsgiWebSocket
from tests.support.kafka import eventually
from tests.support.keys import SHARED_KEY, SHARED_RECORDS, keyed_app

API_KEY = SHARED_KEY
SETTINGS = GatewaySettings(write_key="wk_test_12345")
CHANGED = "subscription C($id: ID!) { customerChanged(id: $id) { customerId changedFields at } }"


def view_app(
    settings: GatewaySettings = SETTINGS,
    hub: LiveHub | None = None,
    verify: KeyVerifier | None = None,
) -> ASGIApp:
    """The GraphQL door as create_app stacks it, with a hub the test can dispatch to."""
    keys = ApiKeys(SHARED_RECORDS)
    view = LodestarGraphQL(
        ServiceClients(settings),
        build_schema(settings),
        False,
        live=hub,
        keys=keys,
        verify_key=verify,
        settings=settings,
    )
    limiter = RateLimiter(settings.graphql_rate_limit_per_s, settings.graphql_rate_limit_burst)
    return GraphQLDoor(LimitRequestSize(view, settings.graphql_max_bytes), keys, limiter)


class WebSocketPeer(AsgiWebSocket):
    """The WebSocket door's client, with the graphql-transport-ws steps these tests take."""

    async def init(self, payload: Any = None) -> None:
        """connection_init with the key, acknowledged."""
        await self.send_json({"type": "connection_init", "payload": payload or {"apiKey": API_KEY}})
        assert (await self.receive_json())["type"] == "connection_ack"

    async def subscribe(self, id_: str, query: str, **variables: Any) -> None:
        payload = {"query": query, "variables": variables}
        await self.send_json({"id": id_, "type": "subscribe", "payload": payload})

    async def close(self) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 10)


async def connected(app: ASGIApp, **kwargs: Any) -> WebSocketPeer:
    peer = WebSocketPeer(app, **kwargs)
    await peer.accepted()
    return peer


async def subscribed(
    hub: LiveHub, key: tuple[Watch, str], count: int = 1, exactly: bool = False
) -> None:
    """Wait until ``count`` subscribers of ``key`` (at least, or exactly) are registered."""

    async def reached() -> bool:
        now = len(hub._subscribers.get(key, ()))
        return now == count if exactly else now >= count

    await eventually(reached, 10, f"{count} subscribers", 0.01)


def change(customer_id: str, *fields: str) -> CustomerChange:
    return CustomerChange("e1", customer_id, fields, datetime(2026, 1, 2, tzinfo=UTC))


# --- authentication in connection_init ---


async def test_the_upgrade_needs_no_header_and_the_key_in_connection_init_is_acknowledged() -> None:
    # Before: the upgrade without Authorization was closed (4401) before accept.
    peer = await connected(keyed_app(SETTINGS))
    await peer.send_json(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {API_KEY}"}}
    )
    assert await peer.receive_json() == {"type": "connection_ack"}
    await peer.subscribe("1", "{ __typename }")
    assert await peer.receive_json() == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"__typename": "Query"}},
    }
    await peer.close()


async def test_the_api_key_form_of_connection_init_is_acknowledged() -> None:
    peer = await connected(view_app())
    await peer.init({"apiKey": API_KEY})
    await peer.close()


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"authorization": "Bearer wrong_key_123"},
        {"authorization": f"Basic {API_KEY}"},
        {"authorization": API_KEY},
        {"apiKey": "wrong_key_123"},
        {"apiKey": 12345},
        {"apiKey": "x" * 30_000},
    ],
    ids=["no-payload", "empty", "wrong", "basic", "no-scheme", "wrong-api-key", "number", "huge"],
)
async def test_connection_init_without_a_valid_key_is_closed_4403(payload: Any) -> None:
    peer = await connected(keyed_app(SETTINGS))
    message: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    await peer.send_json(message)
    assert await peer.closed_with() == 4403
    await asyncio.wait_for(peer.task, 10)
    assert peer.from_app.empty()


async def test_a_header_key_the_door_accepted_authenticates_the_socket() -> None:
    # Clients that can set headers (servers) need not repeat the key in connection_init.
    peer = await connected(keyed_app(SETTINGS), headers={"Authorization": f"Bearer {API_KEY}"})
    await peer.send_json({"type": "connection_init"})
    assert (await peer.receive_json())["type"] == "connection_ack"


async def test_a_failing_key_store_closes_1011_without_a_crash() -> None:
    async def broken(token: str) -> Principal | None:
        raise ConnectionError("key store down")

    peer = await connected(view_app(verify=broken))
    await peer.send_json({"type": "connection_init", "payload": {"apiKey": API_KEY}})
    message = await peer.received()
    assert message == {
        "type": "websocket.close",
        "code": 1011,
        "reason": "the API key could not be checked; retry later",
    }
    await peer.close()


async def test_the_key_is_not_left_in_the_connection_context() -> None:
    seen: dict[str, Any] = {}

    async def verify(token: str) -> Principal | None:
        return Principal("k1", "all", frozenset(Scope))

    view = LodestarGraphQL(
        ServiceClients(SETTINGS), build_schema(SETTINGS), False, verify_key=verify
    )
    context: dict[str, Any] = {
        "connection_params": {"authorization": f"Bearer {API_KEY}", "client": "web"}
    }
    await view.on_ws_connect(context)
    seen.update(context)
    assert seen["connection_params"] == {"client": "web"}
    assert seen["principal"].key_id == "k1"
    assert API_KEY not in repr(seen)


async def test_subscribe_before_connection_init_is_closed_4401_and_runs_nothing() -> None:
    hub = LiveHub("unused:9092", 10)
    peer = await connected(view_app(hub=hub))
    await peer.subscribe("1", CHANGED, id="c1")
    assert await peer.closed_with() == 4401
    assert hub.subscriber_count() == 0


async def test_subscribe_after_a_refused_init_is_not_run() -> None:
    hub = LiveHub("unused:9092", 10)
    peer = await connected(view_app(hub=hub))
    await peer.send_json({"type": "connection_init", "payload": {"apiKey": "wrong_key_123"}})
    await peer.subscribe("1", CHANGED, id="c1")
    assert await peer.closed_with() == 4403
    await asyncio.wait_for(peer.task, 10)
    assert hub.subscriber_count() == 0


async def test_the_legacy_graphql_ws_protocol_is_not_spoken() -> None:
    peer = WebSocketPeer(keyed_app(SETTINGS), subprotocol="graphql-ws")
    await peer.to_app.put({"type": "websocket.connect"})
    accept = await peer.received()
    assert accept["type"] == "websocket.accept"
    assert accept.get("subprotocol") is None
    assert await peer.closed_with() == 4406


# --- hostile messages ---


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "WebSocket message must be valid JSON"),
        ("[1, 2]", "a message must be a JSON object with a string type"),
        ('{"type": 5}', "a message must be a JSON object with a string type"),
        (
            '{"type": "subscribe", "id": {"a": 1}, "payload": {"query": "{ __typename }"}}',
            "id must",
        ),
        (
            '{"type": "subscribe", "id": "' + "x" * 500 + '", "payload": {"query": "{ a }"}}',
            "id must",
        ),
        ('{"type": "subscribe", "id": "1", "payload": "{ __typename }"}', "subscribe needs"),
        ('{"type": "subscribe", "id": "1", "payload": {"query": 5}}', "subscribe needs"),
        (
            '{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "variables": [1]}}',
            "variables",
        ),
        (
            '{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "operationName": 1}}',
            "operationName",
        ),
        ('{"type": "complete", "id": ["1"]}', "id must"),
        ('{"type": "launch"}', "Unknown message type"),
    ],
)
async def test_a_malformed_message_closes_4400_naming_the_problem(text: str, reason: str) -> None:
    peer = await connected(view_app())
    await peer.init()
    await peer.send_text(text)
    message = await peer.received()
    assert message["type"] == "websocket.close", message
    assert message["code"] == 4400
    assert message["reason"].startswith(reason)
    assert "xxxxxxxxxx" not in message["reason"]
    await asyncio.wait_for(peer.task, 10)


async def test_a_websocket_message_over_the_size_limit_closes_the_connection() -> None:
    peer = await connected(keyed_app(SETTINGS))
    await peer.init()
    query = "{ __typename }" + " " * SETTINGS.graphql_max_bytes
    await peer.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
    assert await peer.received() == {"type": "websocket.close", "code": 1009}
    await asyncio.wait_for(peer.task, 10)
    # Nothing ran: the app sent nothing after the close.
    assert peer.from_app.empty()


async def test_a_huge_id_is_refused_without_being_echoed() -> None:
    hub = LiveHub("unused:9092", 10)
    peer = await connected(view_app(hub=hub))
    await peer.init()
    await peer.subscribe("1", CHANGED, id="q" * 10_000)
    message = await peer.receive_json()
    [error] = message["payload"]["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "id must be 1 to 128 characters"
    assert (await peer.receive_json()) == {"id": "1", "type": "complete"}
    assert hub.subscriber_count() == 0
    await peer.close()


# --- limits and pings ---


async def test_one_subscription_over_the_limit_is_refused_naming_the_limit() -> None:
    hub = LiveHub("unused:9092", 10)
    settings = SETTINGS.model_copy(update={"graphql_max_subscriptions_per_connection": 3})
    peer = await connected(view_app(settings, hub))
    await peer.init()
    for n in range(3):
        await peer.subscribe(str(n), CHANGED, id="c1")
    await subscribed(hub, (Watch.CUSTOMER, "c1"), 3)
    await peer.subscribe("3", CHANGED, id="c1")
    refused = await peer.receive_json()
    assert refused["id"] == "3"
    assert refused["type"] == "error"
    [error] = refused["payload"]
    assert error["message"] == "at most 3 subscriptions may run at once on one connection"
    assert error["extensions"] == {"code": "TOO_MANY_SUBSCRIPTIONS", "limit": 3}
    # The three running ones are unaffected; ending one makes room for another.
    await peer.send_json({"id": "0", "type": "complete"})
    await subscribed(hub, (Watch.CUSTOMER, "c1"), 2, exactly=True)
    await peer.subscribe("4", CHANGED, id="c1")
    await subscribed(hub, (Watch.CUSTOMER, "c1"), 3)
    hub.dispatch((Watch.CUSTOMER, "c1"), change("c1", "traits.plan"))
    ids = {(await peer.receive_json())["id"] for _ in range(3)}
    assert ids == {"1", "2", "4"}
    await peer.close()


async def test_no_connection_init_in_time_closes_4408() -> None:
    settings = SETTINGS.model_copy(update={"graphql_ws_init_timeout_s": 0.05})
    peer = await connected(view_app(settings))
    assert await peer.closed_with() == 4408


async def test_the_server_pings_an_idle_connection() -> None:
    settings = SETTINGS.model_copy(update={"graphql_ws_ping_interval_s": 0.05})
    peer = await connected(view_app(settings))
    await peer.init()
    assert await peer.receive_json() == {"type": "ping"}
    await peer.send_json({"type": "pong"})
    assert await peer.receive_json() == {"type": "ping"}
    await peer.close()


# --- subscriptions ---


async def test_customer_changed_delivers_that_customers_changes_only() -> None:
    hub = LiveHub("unused:9092", 10)
    peer = await connected(view_app(hub=hub))
    await peer.init()
    await peer.subscribe("1", CHANGED, id="c1")
    await subscribed(hub, (Watch.CUSTOMER, "c1"))
    hub.dispatch((Watch.CUSTOMER, "c2"), change("c2", "traits.other"))
    hub.dispatch((Watch.CUSTOMER, "c1"), change("c1", "loyalty", "traits.plan"))
    message = await peer.receive_json()
    assert message == {
        "id": "1",
        "type": "next",
        "payload": {
            "data": {
                "customerChanged": {
                    "customerId": "c1",
                    "changedFields": ["loyalty", "traits.plan"],
                    "at": "2026-01-02T00:00:00+00:00",
                }
            }
        },
    }
    await peer.send_json({"id": "1", "type": "complete"})
    await peer.close()
    assert hub.subscriber_count() == 0


async def test_segment_membership_and_pass_events_deliver_their_events() -> None:
    hub = LiveHub("unused:9092", 10)
    peer = await connected(view_app(hub=hub))
    await peer.init()
    await peer.subscribe(
        "s",
        "subscription S($s: ID!) { segmentMembership(segmentId: $s) { customerId change } }",
        s="seg-1",
    )
    await peer.subscribe(
        "p",
        "subscription P($c: ID!) { passEvents(customerId: $c) { serialNumber platform kind at } }",
        c="c1",
    )
    await subscribed(hub, (Watch.SEGMENT, "seg-1"))
    await subscribed(hub, (Watch.PASSES, "c1"))
    at = datetime(2026, 1, 2, tzinfo=UTC)
    hub.dispatch((Watch.SEGMENT, "seg-1"), MembershipChange("e", "seg-1", "c9", True, at))
    hub.dispatch((Watch.PASSES, "c1"), PassChange("e", "c1", "SER1", "APPLE", "INSTALLED", at))
    got = {m["id"]: m["payload"]["data"] for m in [await peer.receive_json() for _ in range(2)]}
    assert got == {
        "s": {"segmentMembership": {"customerId": "c9", "change": "ENTERED"}},
        "p": {
            "passEvents": {
                "serialNumber": "SER1",
                "platform": "APPLE",
                "kind": "INSTALLED",
                "at": "2026-01-02T00:00:00+00:00",
            }
        },
    }
    await peer.close()


async def test_a_subscriber_that_falls_behind_ends_with_subscriber_too_slow() -> None:
    hub = LiveHub("unused:9092", 2)
    peer = await connected(view_app(hub=hub))
    await peer.init()
    await peer.subscribe("1", CHANGED, id="c1")
    await subscribed(hub, (Watch.CUSTOMER, "c1"))
    # Dispatched at once, before the subscription's task can take any: the third overflows.
    for n in range(5):
        hub.dispatch((Watch.CUSTOMER, "c1"), change("c1", f"traits.t{n}"))
    message = await peer.receive_json()
    assert message["type"] == "next"
    [error] = message["payload"]["errors"]
    assert error["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"
    assert "fell behind" in error["message"]
    assert await peer.receive_json() == {"id": "1", "type": "complete"}
    assert hub.subscriber_count() == 0
    await peer.close()


@pytest.mark.parametrize(
    ("scopes", "query", "scope"),
    [
        ({Scope.WALLET}, CHANGED, "read:customers"),
        (
            {Scope.WALLET},
            'subscription { segmentMembership(segmentId: "s") { customerId } }',
            "read:customers",
        ),
        (
            {Scope.READ_CUSTOMERS, Scope.READ_PII},
            'subscription { passEvents(customerId: "c1") { kind } }',
            "wallet",
        ),
    ],
)
async def test_each_subscription_needs_its_scope(
    scopes: set[Scope], query: str, scope: str
) -> None:
    hub = LiveHub("unused:9092", 10)
    principal = Principal("k1", "narrow", frozenset(scopes))

    async def verify(token: str) -> Principal | None:
        return principal if token == API_KEY else None

    peer = await connected(view_app(hub=hub, verify=verify))
    await peer.init()
    await peer.subscribe("1", query, id="c1")
    message = await peer.receive_json()
    [error] = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert error["extensions"] == {"code": "FORBIDDEN", "scope": scope}
    assert scope in error["message"]
    assert hub.subscriber_count() == 0
    await peer.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_subscription_over_plain_http_is_refused_400(method: str) -> None:
    # Before: it ran as a query and came back as an internal error.
    query = 'subscription { customerChanged(id: "c1") { customerId } }'
    transport = httpx.ASGITransport(app=keyed_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.request(
            method,
            "/graphql",
            params={"query": query} if method == "GET" else None,
            json={"query": query} if method == "POST" else None,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error == {
        "message": f"subscriptions are not allowed when using {method}",
        "extensions": {"code": "BAD_REQUEST"},
    }


async def test_a_view_without_a_key_store_refuses_every_key() -> None:
    # Fail closed: a view built with neither a key store nor a verifier accepts no socket.
    view = LodestarGraphQL(ServiceClients(SETTINGS), build_schema(SETTINGS), False)
    peer = await connected(view)
    await peer.send_json({"type": "connection_init", "payload": {"apiKey": API_KEY}})
    assert await peer.closed_with() == 4403
