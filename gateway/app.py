"""The gateway's Starlette application: ingest API, GraphQL, health and metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, cast

from cross_web import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http.ides import get_graphql_ide_html
from strawberry.schema.base import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from gateway.auth import bearer_token_from, same_secret
from gateway.clients import ServiceClients
from gateway.cors import IngestCors
from gateway.errors import UNAUTHENTICATED, error_response
from gateway.ingest import IngestApi
from gateway.intake import EventIntake
from gateway.limits import LimitRequestSize
from gateway.live import LiveHub
from gateway.live_ws import KeyVerifier, LodestarTransportWS, authenticate, single_key_verifier
from gateway.loaders import make_loaders
from gateway.schema import build_schema
from gateway.scopes import ALL_SCOPES, Principal
from gateway.settings import GatewaySettings
from services.platform.bus import Bus, BusConfig
from services.platform.metrics import bearer_matches

log = logging.getLogger(__name__)
# Who a request with the static API key runs as: every scope.
STATIC_KEY_PRINCIPAL = Principal("static", "LODESTAR_API_KEY", ALL_SCOPES)
# extensions.code of requests Strawberry refuses before any GraphQL work.
_REQUEST_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE"}


class LodestarGraphQL(GraphQL[dict[str, Any], None]):
    """Strawberry's ASGI app with the service clients and fresh loaders in each context.

    WebSockets speak graphql-transport-ws only (the legacy graphql-ws protocol has no
    ``connection_init`` authentication) and authenticate there (:mod:`gateway.live_ws`)."""

    graphql_transport_ws_handler_class = LodestarTransportWS

    def __init__(
        self,
        clients: ServiceClients,
        schema: BaseSchema,
        graphiql: bool,
        intake: EventIntake | None = None,
        *,
        live: LiveHub | None = None,
        verify_key: KeyVerifier | None = None,
        settings: GatewaySettings | None = None,
    ) -> None:
        ws = settings or GatewaySettings.model_construct()
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=ws.graphql_ws_init_timeout_s),
            max_subscriptions_per_connection=ws.graphql_max_subscriptions_per_connection,
            allowed_origins=ws.graphql_ws_allowed_origins,
        )
        self.clients = clients
        self.live = live
        self.intake = intake
        self.ws_ping_interval_s = ws.graphql_ws_ping_interval_s
        # Swapped for the key store's verify at merge; None refuses every WebSocket.
        self.verify_key = verify_key

    async def get_context(self, request: Any, response: Any = None) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "loaders": make_loaders(self.clients),
            "request": request,
            # The track/identify/alias mutations take events through the ingest API's intake.
            "intake": self.intake,
            # Until API keys with scopes land, the one static key may do everything.
            "principal": STATIC_KEY_PRINCIPAL,
            "live": self.live,
        }

    async def on_ws_connect(self, context: dict[str, Any]) -> UnsetType:
        """The key arrives in ``connection_init``; without a valid one the socket closes 4403."""
        await authenticate(context, self.verify_key or _refuse_every_key)
        return cast(UnsetType, UNSET)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry answers a malformed request (``query`` not a string, no query, a
        wrong method) in plain text; frontends get the GraphQL error shape with a code."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as refused:
            code = _REQUEST_CODES.get(refused.status_code, "BAD_REQUEST")
            response = error_response(refused.status_code, refused.reason, code)
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        """JSON too deeply nested to decode, or not UTF-8, is malformed JSON (400)."""
        try:
            return json.loads(data)
        except (RecursionError, UnicodeDecodeError) as error:
            raise json.JSONDecodeError("not decodable JSON", "", 0) from error


async def _refuse_every_key(token: str) -> None:
    return None


def _asks_for_the_ide_page(scope: Scope, headers: Headers) -> bool:
    """A browser opening the GraphiQL page: a plain GET for HTML, with no query string."""
    return (
        scope["type"] == "http"
        and scope.get("method") == "GET"
        and not scope.get("query_string")
        and "text/html" in headers.get("accept", "")
    )


class RequireApiKey:
    """Lets a GraphQL request through only with ``Authorization: Bearer <api key>``: GET and
    POST, before anything is read or run. A WebSocket goes through: browsers cannot set its
    headers, so it authenticates in ``connection_init`` before anything runs.

    In dev mode (``graphiql``) the GraphiQL page itself is served without the key: static
    HTML that runs nothing; the queries it sends carry the key like any other client's.
    """

    def __init__(self, app: ASGIApp, api_key: str, graphiql: bool = False) -> None:
        self.app = app
        self.api_key = api_key
        self.ide_html = get_graphql_ide_html("graphiql") if graphiql else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if scope["type"] == "websocket" or same_secret(bearer_token_from(headers), self.api_key):
            await self.app(scope, receive, send)
            return
        if self.ide_html is not None and _asks_for_the_ide_page(scope, headers):
            await HTMLResponse(self.ide_html)(scope, receive, send)
            return
        log.info("graphql request without the API key", extra={"fields": {"on": scope["type"]}})
        response = error_response(
            401, "missing or wrong API key; send Authorization: Bearer <key>", UNAUTHENTICATED
        )
        await response(scope, receive, send)


def create_app(settings: GatewaySettings) -> Starlette:
    """Build the application; connections open in its lifespan."""
    bus = Bus(BusConfig.from_settings(settings, "gateway"))
    clients = ServiceClients(settings)
    ingest = IngestApi(settings, bus)
    live = LiveHub(
        settings.kafka_bootstrap_servers,
        settings.graphql_subscriber_queue,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    view = LodestarGraphQL(
        clients,
        build_schema(settings),
        settings.graphiql,
        ingest.intake,
        live=live,
        verify_key=single_key_verifier(settings.api_key.get_secret_value()),
        settings=settings,
    )
    graphql = RequireApiKey(
        LimitRequestSize(view, settings.graphql_max_bytes),
        settings.api_key.get_secret_value(),
        settings.graphiql,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await clients.open()
        await bus.start()
        await live.start()
        try:
            yield
        finally:
            await live.stop()
            await bus.stop()
            await clients.close()

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    metrics_token = settings.metrics_token_value()

    async def metrics(request: Request) -> Response:
        if metrics_token is not None and not bearer_matches(
            request.headers.get("authorization", ""), metrics_token
        ):
            return Response(
                "send Authorization: Bearer <LODESTAR_METRICS_TOKEN>\n", status_code=401
            )
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            *ingest.routes(),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ],
        middleware=[
            Middleware(IngestCors, origins=settings.ingest_cors_origins, paths=ingest.paths())
        ],
        lifespan=lifespan,
    )
