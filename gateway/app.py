"""The gateway's Starlette application: ingest API, GraphQL, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL

from gateway.auth import bearer_token_from, same_secret
from gateway.clients import ServiceClients
from gateway.ingest import IngestApi
from gateway.loaders import make_loaders
from gateway.schema import schema
from gateway.settings import GatewaySettings
from services.platform.bus import Bus, BusConfig


class LodestarGraphQL(GraphQL[dict[str, Any], None]):
    """Strawberry's ASGI app with the service clients and fresh loaders in each context."""

    def __init__(self, clients: ServiceClients) -> None:
        super().__init__(schema, graphql_ide="graphiql")
        self.clients = clients

    async def get_context(self, request: Any, response: Any = None) -> dict[str, Any]:
        return {"clients": self.clients, "loaders": make_loaders(self.clients), "request": request}


class RequireApiKey:
    """Lets GraphQL requests through only with ``Authorization: Bearer <api key>``.

    The GraphiQL page itself (a browser GET asking for HTML) is public; the queries it sends
    carry the key like any other client's.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        is_ide_page = (
            scope["type"] == "http"
            and scope.get("method") == "GET"
            and "text/html" in headers.get("accept", "")
        )
        if is_ide_page or same_secret(bearer_token_from(headers), self.api_key):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401})
            return
        response = JSONResponse(
            {
                "errors": [
                    {
                        "message": "missing or wrong API key; send Authorization: Bearer <key>",
                        "extensions": {"code": "UNAUTHENTICATED"},
                    }
                ]
            },
            status_code=401,
        )
        await response(scope, receive, send)


def create_app(settings: GatewaySettings) -> Starlette:
    """Build the application; connections open in its lifespan."""
    bus = Bus(BusConfig.from_settings(settings, "gateway"))
    clients = ServiceClients(settings)
    ingest = IngestApi(settings, bus)
    graphql = RequireApiKey(LodestarGraphQL(clients), settings.api_key.get_secret_value())

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await clients.open()
        await bus.start()
        try:
            yield
        finally:
            await bus.stop()
            await clients.close()

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            *ingest.routes(),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
