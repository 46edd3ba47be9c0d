"""The GraphQL door: every way of running a query over HTTP (GET, POST) needs the API key;
only the GraphiQL page itself is served without it, and only in dev mode. WebSockets
authenticate in ``connection_init`` (tests/unit/gateway/test_graphql_ws.py).

The app runs without its lifespan, so no service client is open: a query that reached a
resolver would come back as an internal error, and one that did not reach execution at all
has no ``data``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings

API_KEY = "ak_test_12345"
SETTINGS = GatewaySettings(write_key="wk_test_12345", api_key=API_KEY)
DEV_SETTINGS = SETTINGS.model_copy(update={"graphiql": True})
BEARER = {"Authorization": f"Bearer {API_KEY}"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
QUERY = '{ customer(by: {identifier: {type: "email", value: "ada@example.com"}}) { id traits } }'
TRANSPORT_WS = "graphql-transport-ws"


async def client_for(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings))
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


def test_graphiql_is_off_by_default() -> None:
    assert SETTINGS.graphiql is False


def test_graphiql_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_GATEWAY_GRAPHIQL", "true")
    assert GatewaySettings(write_key="wk_test_12345", api_key=API_KEY).graphiql is True


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


async def test_get_query_with_the_key_still_runs(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={**HTML, **BEARER}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}
