"""A malformed GraphQL request (not the document, the envelope around it) gets the GraphQL
error shape with an ``extensions.code``, as every other refusal does, never plain text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.settings import GatewaySettings
from tests.support.keys import SHARED_BEARER, keyed_app

BEARER = SHARED_BEARER


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = keyed_app(GatewaySettings(write_key="wk_test_12345"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.mark.parametrize(
    "body",
    [
        {"query": 5},
        {"query": ["{ segments { id } }"]},
        {"variables": {}},
        {"query": "{ segments { id } }", "variables": "x"},
    ],
)
async def test_a_malformed_envelope_is_a_coded_400(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/graphql", json=body, headers=BEARER)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert error["message"]


async def test_a_wrong_content_type_is_coded(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"{ segments { id } }", headers={**BEARER, "Content-Type": "text/x"}
    )
    assert 400 <= response.status_code < 500
    [error] = response.json()["errors"]
    assert error["extensions"]["code"]


async def test_gateway_metrics_behind_the_token() -> None:
    token = "a-metrics-token-0123456789"
    settings = GatewaySettings(write_key="wk_test_12345", metrics_token=token)
    transport = httpx.ASGITransport(app=keyed_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=BEARER)).status_code == 401
        scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert scraped.status_code == 200
    assert "lodestar_ingest_events_total" in scraped.text


@pytest.mark.parametrize(
    "raw",
    [
        # Python refuses to parse integers this long (a ValueError, not a JSONDecodeError).
        b'{"query": "{ __typename }", "variables": {"n": ' + b"9" * 5000 + b"}}",
        b"[" * 30_000 + b"]" * 30_000,
        b'{"query": "\xff\xfe"}',
    ],
    ids=["huge-int", "deep", "not-utf8"],
)
async def test_undecodable_json_is_a_coded_400(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/graphql", content=raw, headers={**BEARER, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"]
