"""Dev mode only (``LODESTAR_GATEWAY_GRAPHIQL``): schema introspection, "Did you mean ...?"
suggestions, and the GraphiQL page with its assets, which come from the pinned npm packages
in gateway/graphiql (no CDN: the page works offline)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.devmode import without_suggestion
from gateway.ide import ASSETS, NODE_MODULES
from gateway.settings import GatewaySettings
from tests.support.keys import SHARED_BEARER, keyed_app

SETTINGS = GatewaySettings(write_key="wk_test_12345")
DEV_SETTINGS = SETTINGS.model_copy(update={"graphiql": True})
HTML = {"Accept": "text/html"}
INTROSPECTIONS = [
    "{ __schema { types { name } } }",
    '{ __type(name: "Query") { fields { name } } }',
    "query { a: __schema { queryType { name } } }",
    "fragment F on Query { __schema { queryType { name } } } { ...F }",
]
# (query, what dev mode suggests)
MISSPELLED = [
    ("{ segmentz { id } }", "segments"),
    ('{ customer(byy: {id: "x"}) { id } }', "by"),
    ("query($a: Strin) { __typename }", "String"),
]


async def client_for(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def prod() -> AsyncIterator[httpx.AsyncClient]:
    async for http in client_for(SETTINGS):
        yield http


@pytest.fixture
async def dev() -> AsyncIterator[httpx.AsyncClient]:
    async for http in client_for(DEV_SETTINGS):
        yield http


async def run(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query}, headers=SHARED_BEARER)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("query", INTROSPECTIONS)
async def test_introspection_is_refused_outside_dev_mode(
    prod: httpx.AsyncClient, query: str
) -> None:
    body = await run(prod, query)
    assert body.get("data") is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
    assert "introspection" in body["errors"][0]["message"].lower()
    assert "queryType" not in str(body.get("data"))


@pytest.mark.parametrize("query", INTROSPECTIONS)
async def test_introspection_runs_in_dev_mode(dev: httpx.AsyncClient, query: str) -> None:
    body = await run(dev, query)
    assert "errors" not in body, body
    assert body["data"]


async def test_typename_is_not_introspection(prod: httpx.AsyncClient) -> None:
    assert await run(prod, "{ __typename }") == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(("query", "suggested"), MISSPELLED)
async def test_no_suggestions_outside_dev_mode(
    prod: httpx.AsyncClient, query: str, suggested: str
) -> None:
    body = await run(prod, query)
    messages = " ".join(e["message"] for e in body["errors"])
    assert "Did you mean" not in messages
    assert f"'{suggested}'" not in messages


@pytest.mark.parametrize(("query", "suggested"), MISSPELLED)
async def test_suggestions_in_dev_mode(dev: httpx.AsyncClient, query: str, suggested: str) -> None:
    body = await run(dev, query)
    messages = " ".join(e["message"] for e in body["errors"])
    assert "Did you mean" in messages
    assert f"'{suggested}'" in messages


def test_a_suggestion_tail_is_cut_and_the_rest_kept() -> None:
    message = "Cannot query field 'segmentz' on type 'Query'. Did you mean 'segments'?"
    assert without_suggestion(message) == "Cannot query field 'segmentz' on type 'Query'."
    assert without_suggestion("Unknown type 'X'.") == "Unknown type 'X'."


def referenced_assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


async def test_the_page_loads_nothing_from_another_host(dev: httpx.AsyncClient) -> None:
    page = (await dev.get("/graphql", headers=HTML)).text
    assert not re.search(r"https?://", page)
    assert "unpkg" not in page
    assert "cdn" not in page.lower()
    assets = [a for a in referenced_assets(page) if not a.startswith("data:")]
    assert sorted(a.rsplit("/", 1)[1] for a in assets) == sorted(ASSETS)


@pytest.mark.skipif(not NODE_MODULES.is_dir(), reason="npm ci has not run in gateway/graphiql")
async def test_every_asset_of_the_page_is_served_without_a_key(dev: httpx.AsyncClient) -> None:
    page = (await dev.get("/graphql", headers=HTML)).text
    for path in referenced_assets(page):
        if path.startswith("data:"):
            continue
        response = await dev.get(path)
        assert response.status_code == 200, path
        expected = "text/css" if path.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(expected), path
        assert len(response.content) > 1_000
    js = (await dev.get("/graphiql/static/graphiql.min.js")).text
    assert "GraphiQL" in js


def test_the_pinned_versions_are_installed() -> None:
    import json

    if not NODE_MODULES.is_dir():
        pytest.skip("npm ci has not run in gateway/graphiql")
    versions = {
        name: json.loads((NODE_MODULES / name / "package.json").read_text())["version"]
        for name in ("graphiql", "react", "react-dom")
    }
    assert versions == {"graphiql": "4.1.2", "react": "18.3.1", "react-dom": "18.3.1"}


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/static/package.json",
        "/graphiql/static/..%2Fpackage.json",
        "/graphiql/static/..%2F..%2Fsettings.py",
        "/graphiql/static/%2e%2e/%2e%2e/app.py",
        "/graphiql/static/react.development.js",
        "/graphiql/static/",
        "/graphiql/",
    ],
)
async def test_nothing_else_is_served_from_node_modules(dev: httpx.AsyncClient, path: str) -> None:
    response = await dev.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


async def test_no_assets_outside_dev_mode(prod: httpx.AsyncClient) -> None:
    for name in ASSETS:
        assert (await prod.get(f"/graphiql/static/{name}")).status_code == 404
        assert (
            await prod.get(f"/graphiql/static/{name}", headers=SHARED_BEARER)
        ).status_code == 404
