"""CORS on the ingest routes, for analytics.js in a page on another origin; none elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from gateway.cors import IngestCors
from gateway.ingest import IngestApi
from gateway.settings import GatewaySettings
from services.platform.bus import Bus, BusConfig
from tests.support.keys import SHARED_BEARER, keyed_app

WRITE_KEY = "wk_cors_test_12345"
SHOP = "https://shop.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST"}


class NullBus(Bus):
    """Accepts everything, keeps nothing."""

    def __init__(self) -> None:
        super().__init__(BusConfig(bootstrap_servers="unused:9092", client_id="test"))

    async def publish_many(self, records: object) -> None:
        return None


def settings(origins: str) -> GatewaySettings:
    return GatewaySettings(
        write_key=WRITE_KEY,
        ingest_cors_origins=origins,
    )


def ingest_app(origins: str) -> Starlette:
    config = settings(origins)
    api = IngestApi(config, NullBus())
    middleware = [Middleware(IngestCors, origins=config.ingest_cors_origins, paths=api.paths())]
    return Starlette(routes=api.routes(), middleware=middleware)


@pytest.fixture
async def shop_only() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ingest_app(f"{SHOP}, https://other.example"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def browser_call(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Content-Type": "text/plain"}


BODY = b'{"userId": "u-1", "event": "Viewed", "writeKey": "' + WRITE_KEY.encode() + b'"}'


@pytest.mark.parametrize("route", ["/v1/t", "/v1/track", "/v1/b", "/v1/batch"])
async def test_preflight_from_an_allowed_origin(shop_only: httpx.AsyncClient, route: str) -> None:
    headers = {
        "Origin": SHOP,
        **PREFLIGHT,
        "Access-Control-Request-Headers": "authorization, content-type, content-encoding",
    }
    response = await shop_only.options(route, headers=headers)
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == SHOP
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "content-encoding"} <= {
        h.strip() for h in allowed.split(",")
    }
    assert "origin" in response.headers["vary"].lower()
    assert int(response.headers["access-control-max-age"]) > 0


async def test_preflight_from_another_origin_is_refused(shop_only: httpx.AsyncClient) -> None:
    response = await shop_only.options(
        "/v1/t", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "cors_origin_not_allowed"
    assert "evil" not in error["message"]


async def test_a_call_from_an_allowed_origin_carries_the_cors_headers(
    shop_only: httpx.AsyncClient,
) -> None:
    response = await shop_only.post("/v1/t", content=BODY, headers=browser_call(SHOP))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == SHOP
    # analytics-next reads these on a 429; a page may only read exposed headers.
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "retry-after" in exposed
    assert "x-ratelimit-reset" in exposed


async def test_a_refusal_carries_them_too(shop_only: httpx.AsyncClient) -> None:
    response = await shop_only.post("/v1/t", content=b"{}", headers=browser_call(SHOP))
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == SHOP


async def test_a_call_from_another_origin_gets_no_cors_headers(
    shop_only: httpx.AsyncClient,
) -> None:
    response = await shop_only.post(
        "/v1/t", content=BODY, headers=browser_call("https://evil.example")
    )
    assert "access-control-allow-origin" not in response.headers


async def test_star_allows_any_origin() -> None:
    transport = httpx.ASGITransport(app=ingest_app("*"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        preflight = await http.options(
            "/v1/b", headers={"Origin": "https://a.example", **PREFLIGHT}
        )
        call = await http.post("/v1/t", content=BODY, headers=browser_call("https://b.example"))
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert call.status_code == 200
    assert call.headers["access-control-allow-origin"] == "*"


async def test_by_default_no_cors_at_all() -> None:
    transport = httpx.ASGITransport(app=keyed_app(settings("")))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        preflight = await http.options("/v1/t", headers={"Origin": SHOP, **PREFLIGHT})
        call = await http.post("/v1/t", content=b"{}", headers=browser_call(SHOP))
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    assert call.status_code == 401
    assert "access-control-allow-origin" not in call.headers


async def test_the_gateway_answers_cors_on_ingest_but_not_on_graphql() -> None:
    transport = httpx.ASGITransport(app=keyed_app(settings("*")))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        ingest = await http.options("/v1/track", headers={"Origin": SHOP, **PREFLIGHT})
        graphql = await http.options("/graphql", headers={"Origin": SHOP, **PREFLIGHT})
        query = await http.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"Origin": SHOP, **SHARED_BEARER},
        )
    assert ingest.status_code == 204
    assert ingest.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in graphql.headers
    assert query.status_code == 200, query.text
    assert "access-control-allow-origin" not in query.headers


def test_an_origin_setting_that_is_not_an_origin_is_refused() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        settings("https://shop.example/path")
