"""The GraphQL door: every way of running a query (GET, POST, WebSocket) needs an API key
from the key store; a key lacking the scope of every root field it asks for gets 403 naming
the scope; each key has a rate limit (429). Only the GraphiQL page itself (and its assets)
is served without a key, and only in dev mode.

The app runs without its lifespan, so no service client is open: a query that reached a
resolver of the services would come back as an internal error, and one that did not reach
execution at all has no ``data``. The key store's records are in memory here (their MongoDB
side is tests/integration/test_gateway_keys.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.keys import ApiKeys, split_key
from gateway.scopes import ALL_SCOPES, Scope
from gateway.settings import GatewaySettings
from services.platform.logs import JsonFormatter
from tests.support.asgi_websocket import AsgiWebSocket
from tests.support.keys import MemoryKeyRecords, bearer

SETTINGS = GatewaySettings(write_key="wk_test_12345")
DEV_SETTINGS = SETTINGS.model_copy(update={"graphiql": True})
RECORDS = MemoryKeyRecords()
ADMIN_KEY = RECORDS.add(ALL_SCOPES, "admin")
READER_KEY = RECORDS.add([Scope.READ_CUSTOMERS, Scope.READ_PII], "reader")
REVOKED_KEY = RECORDS.add(ALL_SCOPES, "revoked")
_revoked_id = REVOKED_KEY.split("_")[1]
RECORDS.keys[_revoked_id] = replace(RECORDS.keys[_revoked_id], revoked_at=datetime.now(UTC))
BEARER = bearer(ADMIN_KEY)
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
QUERY = '{ customer(identifier: {type: "email", value: "ada@example.com"}) { id traits } }'
UNKNOWN_KEY = "lsk_0123456789abcdef_" + "A" * 43


def app_for(settings: GatewaySettings, records: MemoryKeyRecords = RECORDS) -> Any:
    return create_app(settings, ApiKeys(records, ttl_s=settings.graphql_key_cache_ttl_s))


async def client_for(
    settings: GatewaySettings, records: MemoryKeyRecords = RECORDS
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_for(settings, records))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture(params=[False, True], ids=["prod", "dev"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway with GraphiQL off, then on: the key is needed either way."""
    async for http in client_for(DEV_SETTINGS if request.param else SETTINGS):
        yield http


@pytest.fixture
async def prod() -> AsyncIterator[httpx.AsyncClient]:
    async for http in client_for(SETTINGS):
        yield http


@pytest.fixture
async def dev() -> AsyncIterator[httpx.AsyncClient]:
    async for http in client_for(DEV_SETTINGS):
        yield http


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body: dict[str, Any] = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def forbidden(response: httpx.Response, scope: str) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    body: dict[str, Any] = response.json()
    [error] = body["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN", "scope": scope}
    assert scope in error["message"]
    return body


async def post(
    client: httpx.AsyncClient, query: str, key: str = ADMIN_KEY, **body: Any
) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, **body}, headers=bearer(key))


def test_graphiql_is_off_by_default() -> None:
    assert SETTINGS.graphiql is False


def test_graphiql_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_GATEWAY_GRAPHIQL", "true")
    assert GatewaySettings(write_key="wk_test_12345").graphiql is True


async def test_browser_get_with_a_query_and_no_key_is_401(client: httpx.AsyncClient) -> None:
    # The probe: a browser-looking GET carrying a query ran it and returned customer data.
    response = await client.get("/graphql", params={"query": QUERY}, headers=HTML)
    assert_unauthenticated(response)
    response = await client.get("/graphql", params={"query": "{ __typename }"}, headers=HTML)
    assert_unauthenticated(response)
    assert "Query" not in response.text


@pytest.mark.parametrize(
    "params",
    [
        {"query": "{ __typename }", "variables": "{}"},
        {"operationName": "A"},
        {"variables": '{"a": 1}'},
        {"anything": "1"},
    ],
)
async def test_browser_get_with_any_query_string_needs_the_key(
    dev: httpx.AsyncClient, params: dict[str, str]
) -> None:
    assert_unauthenticated(await dev.get("/graphql", params=params, headers=HTML))


async def test_browser_post_without_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers=HTML)
    assert_unauthenticated(response)


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        f"Basic {ADMIN_KEY}",
        ADMIN_KEY,
        f"Bearer{ADMIN_KEY}",
        f"Bearer {ADMIN_KEY} extra",
        f"Bearer {ADMIN_KEY}x",
        f"Bearer {ADMIN_KEY[:-1]}",
        f"Bearer {ADMIN_KEY.replace('lsk_', 'ak_', 1)}",
        f"Bearer {ADMIN_KEY.upper()}",
        f"Bearer {REVOKED_KEY}",
        f"Bearer {UNKNOWN_KEY}",
        f"Bearer {ADMIN_KEY.rsplit('_', 1)[0]}_{'B' * 43}",
        "Bearer ak_test_12345",
        "Bearer " + "lsk_" + "a" * 60_000,
        "Bearer lsk_0123456789abcdef_" + "é" * 43,
    ],
    ids=lambda a: a[:30],
)
async def test_a_missing_malformed_wrong_or_revoked_key_is_401(
    client: httpx.AsyncClient, authorization: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Sent as raw bytes: a non-ASCII header reaches the app as latin-1 text.
    headers = {b"Authorization": authorization.encode()}
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
    assert_unauthenticated(response)
    assert "Bearer" in response.json()["errors"][0]["message"]
    # The answer and the log never echo what was sent.
    token = authorization.partition(" ")[2].strip()
    if len(token) >= 8:
        assert token not in response.text
        logged = "".join(JsonFormatter("gateway").format(r) for r in caplog.records)
        assert token not in logged
        assert token.split("_")[-1] not in logged


async def test_a_valid_key_runs_the_query_as_its_principal(client: httpx.AsyncClient) -> None:
    response = await post(client, "{ apiKeys { id name } }")
    assert response.status_code == 200, response.text
    names = {k["name"] for k in response.json()["data"]["apiKeys"]}
    assert {"admin", "reader", "revoked"} <= names


async def test_a_key_without_the_scope_is_403_naming_it(client: httpx.AsyncClient) -> None:
    forbidden(await post(client, "{ apiKeys { id } }", READER_KEY), "admin")
    body = forbidden(
        await post(client, 'mutation { revokeApiKey(id: "0123456789abcdef") { id } }', READER_KEY),
        "admin",
    )
    assert body["data"] == {"revokeApiKey": None}
    forbidden(
        await post(
            client,
            'mutation { createApiKey(name: "x", scopes: ["admin"]) { key } }',
            READER_KEY,
        ),
        "admin",
    )
    # Nothing was created by the refused mutation.
    assert {k.name for k in RECORDS.keys.values()} >= {"admin"}
    assert "x" not in {k.name for k in RECORDS.keys.values()}


async def test_admin_creates_lists_and_revokes_keys(client: httpx.AsyncClient) -> None:
    records = MemoryKeyRecords()
    admin = records.add(ALL_SCOPES, "admin")
    async for http in client_for(
        SETTINGS.model_copy(update={"graphql_key_cache_ttl_s": 0}), records
    ):
        created = await post(
            http,
            'mutation($s: [String!]!) { createApiKey(name: "shop", scopes: $s) '
            "{ key apiKey { id name scopes createdAt revokedAt } } }",
            admin,
            variables={"s": ["read:customers", "read:pii"]},
        )
        assert created.status_code == 200, created.text
        answer = created.json()["data"]["createApiKey"]
        key = answer["key"]
        assert split_key(key) is not None
        assert answer["apiKey"]["scopes"] == ["read:customers", "read:pii"]
        assert answer["apiKey"]["revokedAt"] is None
        key_id = answer["apiKey"]["id"]
        # The new key works at once, with exactly its scopes.
        forbidden(await post(http, "{ apiKeys { id } }", key), "admin")
        listed = await post(http, "{ apiKeys { id name scopes createdAt revokedAt } }", admin)
        assert key not in listed.text
        parts = split_key(key)
        assert parts is not None
        # The secret may itself hold "_" (URL-safe alphabet): take it as the key parser does.
        assert parts[1] not in listed.text
        assert key_id in {k["id"] for k in listed.json()["data"]["apiKeys"]}
        revoked = await post(
            http,
            "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
            admin,
            variables={"id": key_id},
        )
        assert revoked.json()["data"]["revokeApiKey"]["revokedAt"] is not None
        assert_unauthenticated(await post(http, "{ __typename }", key))


@pytest.mark.parametrize(
    ("scopes", "named"),
    [(["read:customers", "write:everything"], "write:everything"), (["ADMIN"], "ADMIN")],
)
async def test_creating_a_key_with_an_unknown_scope_names_it(
    prod: httpx.AsyncClient, scopes: list[str], named: str
) -> None:
    before = len(RECORDS.keys)
    response = await post(
        prod,
        'mutation($s: [String!]!) { createApiKey(name: "n", scopes: $s) { key } }',
        variables={"s": scopes},
    )
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert repr(named) in error["message"]
    assert "read:customers" in error["message"]
    assert len(RECORDS.keys) == before


async def test_over_the_rate_limit_is_429_with_retry_after() -> None:
    strict = SETTINGS.model_copy(
        update={"graphql_rate_limit_per_s": 0.5, "graphql_rate_limit_burst": 3}
    )
    async for http in client_for(strict):
        for _ in range(3):
            assert (await post(http, "{ __typename }")).status_code == 200
        response = await post(http, "{ __typename }")
        assert response.status_code == 429, response.text
        assert response.headers["retry-after"].isdigit()
        assert int(response.headers["retry-after"]) >= 1
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert "data" not in response.json()
        # The limit is per key: another key is not slowed by this one's abuse.
        assert (await post(http, "{ __typename }", READER_KEY)).status_code == 200
        # A flood of bad keys is refused as 401 and never spends a valid key's tokens.
        for _ in range(20):
            assert_unauthenticated(await post(http, "{ __typename }", UNKNOWN_KEY))


def test_the_default_rate_limit_is_generous() -> None:
    assert SETTINGS.graphql_rate_limit_per_s >= 500
    assert SETTINGS.graphql_rate_limit_burst >= 1_000


async def test_an_unreachable_key_store_is_503_not_401() -> None:
    class Down(MemoryKeyRecords):
        async def find(self, key_id: str) -> None:
            raise ConnectionError("store down")

    async for http in client_for(SETTINGS, Down()):
        response = await post(http, "{ __typename }")
    assert response.status_code == 503
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] in ("UNAVAILABLE", "SERVICE_UNAVAILABLE")


async def test_graphiql_page_is_served_without_key_in_dev_mode(dev: httpx.AsyncClient) -> None:
    response = await dev.get("/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_graphiql_page_needs_the_key_when_dev_mode_is_off(prod: httpx.AsyncClient) -> None:
    assert_unauthenticated(await prod.get("/graphql", headers=HTML))


async def test_no_graphiql_page_at_all_when_dev_mode_is_off(prod: httpx.AsyncClient) -> None:
    response = await prod.get("/graphql", headers={**HTML, **BEARER})
    assert response.status_code == 404
    assert "graphiql" not in response.text.lower()


async def test_graphiql_page_with_the_key_in_dev_mode(dev: httpx.AsyncClient) -> None:
    response = await dev.get("/graphql", headers={**HTML, **BEARER})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/graphiql/static/graphiql.min.js" in response.text


async def test_get_query_with_the_key_still_runs(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={**HTML, **BEARER}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


class WebSocketPeer(AsgiWebSocket):
    """A WebSocket to the gateway app of ``settings`` whose key store holds ``records``."""

    def __init__(
        self,
        settings: GatewaySettings,
        headers: dict[str, str],
        records: MemoryKeyRecords = RECORDS,
    ) -> None:
        super().__init__(app_for(settings, records), headers)


@pytest.mark.parametrize("settings", [SETTINGS, DEV_SETTINGS], ids=["prod", "dev"])
@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong_key_123"},
        {"Authorization": f"Bearer {REVOKED_KEY}"},
        {"Authorization": "Basic abc"},
    ],
    ids=["wrong", "revoked", "basic"],
)
async def test_websocket_with_a_wrong_header_key_is_closed_with_4401_before_accept(
    settings: GatewaySettings, headers: dict[str, str]
) -> None:
    peer = WebSocketPeer(settings, headers)
    await peer.to_app.put({"type": "websocket.connect"})
    assert await peer.received() == {"type": "websocket.close", "code": 4401}
    await asyncio.wait_for(peer.task, 10)
    # Refused in the handshake: the app never accepted, so no operation could be sent.
    assert peer.from_app.empty()


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"Authorization": "Bearer wrong_key_123"},
        {"Authorization": f"Bearer {REVOKED_KEY}"},
        {"Authorization": ["Bearer", ADMIN_KEY]},
        {"Authorization": ADMIN_KEY},
    ],
    ids=["none", "empty", "wrong", "revoked", "list", "no-scheme"],
)
async def test_websocket_without_a_key_in_connection_init_is_closed_before_any_operation(
    payload: dict[str, Any] | None,
) -> None:
    # Browsers cannot set headers on a WebSocket: the upgrade passes, connection_init decides.
    peer = WebSocketPeer(SETTINGS, HTML)
    await peer.accepted()
    init: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        init["payload"] = payload
    await peer.send_json(init)
    closed = await peer.received()
    assert closed["type"] == "websocket.close", closed
    assert closed["code"] == 4403
    await asyncio.wait_for(peer.task, 10)
    assert peer.from_app.empty()


async def test_websocket_is_refused_when_the_key_store_is_unreachable() -> None:
    class Down(MemoryKeyRecords):
        async def find(self, key_id: str) -> None:
            raise ConnectionError("store down")

    peer = WebSocketPeer(SETTINGS, {}, Down())
    await peer.accepted()
    await peer.send_json(
        {"type": "connection_init", "payload": {"Authorization": f"Bearer {ADMIN_KEY}"}}
    )
    closed = await peer.received()
    assert closed["type"] == "websocket.close", closed
    # A server fault, not a refusal of the key (1011, RFC 6455).
    assert closed["code"] == 1011
    await asyncio.wait_for(peer.task, 10)


@pytest.mark.parametrize("in_header", [True, False], ids=["header", "connection_init"])
async def test_websocket_with_the_key_runs_an_operation(in_header: bool) -> None:
    # The control for the tests above: the same connection with the key is accepted and runs.
    peer = WebSocketPeer(SETTINGS, BEARER if in_header else {})
    await peer.accepted()
    init: dict[str, Any] = {"type": "connection_init"}
    if not in_header:
        init["payload"] = {"Authorization": f"Bearer {ADMIN_KEY}"}
    await peer.send_json(init)
    assert (await peer.receive_json())["type"] == "connection_ack"
    await peer.send_json({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}})
    message = await peer.receive_json()
    assert message == {"id": "1", "type": "next", "payload": {"data": {"__typename": "Query"}}}
    await peer.close()


async def test_a_websocket_message_over_the_size_limit_closes_the_connection() -> None:
    peer = WebSocketPeer(SETTINGS, BEARER)
    await peer.accepted()
    await peer.send_json({"type": "connection_init"})
    assert (await peer.receive_json())["type"] == "connection_ack"
    query = "{ __typename }" + " " * SETTINGS.graphql_max_bytes
    await peer.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
    assert await peer.received() == {"type": "websocket.close", "code": 1009}
    await asyncio.wait_for(peer.task, 10)
    # Nothing ran: the app sent nothing after the close.
    assert peer.from_app.empty()


async def test_logs_name_the_key_id_never_the_key(
    prod: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await post(
        prod, 'mutation { createApiKey(name: "logged", scopes: ["wallet"]) { key } }'
    )
    new_key = created.json()["data"]["createApiKey"]["key"]
    await post(prod, "{ __typename }", REVOKED_KEY)
    await post(prod, "{ __typename }", new_key + "x")
    logged = "".join(
        JsonFormatter("gateway").format(r) + repr(vars(r))
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    # Who created the key, and which key was created: by their ids.
    assert ADMIN_KEY.split("_")[1] in logged
    assert new_key.split("_")[1] in logged
    for key in (ADMIN_KEY, REVOKED_KEY, new_key):
        assert key not in logged
        assert key.split("_", 2)[2] not in logged
