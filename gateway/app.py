"""The gateway's Starlette application: ingest API, GraphQL, health and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.base import BaseSchema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from gateway.auth import bearer_token_from
from gateway.clients import ServiceClients
from gateway.cors import IngestCors
from gateway.errors import SERVICE_UNAVAILABLE, UNAUTHENTICATED
from gateway.graphql_http import (
    GRAPHQL_RESPONSE,
    JSON,
    PRINCIPAL,
    error_answer,
    http_status,
    is_request_error,
    response_media_type,
    wants_graphql_response,
)
from gateway.ide import asset_routes, graphiql_page
from gateway.ingest import IngestApi
from gateway.intake import EventIntake
from gateway.keys import ApiKeys, split_key
from gateway.keys_store import api_keys_from
from gateway.limits import LimitRequestSize
from gateway.live import LiveHub
from gateway.live_ws import KeyVerifier, LodestarTransportWS, authenticate
from gateway.loaders import make_loaders
from gateway.ratelimit import RateLimiter, whole_seconds
from gateway.readiness import gateway_health, readyz
from gateway.schema import build_schema
from gateway.scopes import Principal
from gateway.settings import GatewaySettings
from gateway.spans import HttpSpans
from services.platform import tracing
from services.platform.bus import Bus, BusConfig
from services.platform.metrics import bearer_matches
from services.platform.runtime import (
    DRAIN_S,
    HARD_LIMIT_S,
    STEP_S,
    arm_watchdog,
    bounded,
    flush_tracing,
)

log = logging.getLogger(__name__)
# extensions.code of requests Strawberry refuses before any GraphQL work.
_REQUEST_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE"}
RATE_LIMITED = "RATE_LIMITED"
# connection_init answered with a plain connection_ack.
_ACK: UnsetType = UNSET
NO_KEY = "missing or wrong API key; send Authorization: Bearer <key>"
KEY_STORE_DOWN = "the API key store is unavailable; retry shortly"


class LodestarGraphQL(GraphQL[dict[str, Any], None]):
    """Strawberry's ASGI app with the service clients, fresh loaders, the key store and the
    authenticated principal in each context, answering as GraphQL over HTTP says.

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
        keys: ApiKeys | None = None,
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
        self.intake = intake
        self.live = live
        # The key store (admin fields) and how connection_init keys are verified.
        self.keys = keys
        self.verify_key = verify_key or (keys.verify if keys is not None else None)
        self.ws_ping_interval_s = ws.graphql_ws_ping_interval_s

    async def get_context(self, request: Any, response: Any = None) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "loaders": make_loaders(self.clients),
            "request": request,
            # Set by GraphQLDoor for HTTP; by connection_init for a WebSocket.
            "principal": request.scope.get(PRINCIPAL),
            "keys": self.keys,
            # The track/identify/alias mutations take events through the ingest API's intake.
            "intake": self.intake,
            "live": self.live,
        }

    async def on_ws_connect(self, context: dict[str, Any]) -> UnsetType:
        """A socket whose header key the door accepted is in; otherwise the key arrives in
        ``connection_init``, and without a valid one the socket closes 4403."""
        if context.get("principal") is not None:
            return _ACK
        await authenticate(context, self.verify_key or _refuse_every_key)
        return _ACK

    async def render_graphql_ide(self, request: Request) -> Response:
        """The offline GraphiQL page (dev mode), not Strawberry's CDN one."""
        return graphiql_page()

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """The answer's content type follows the request's Accept (GraphQL over HTTP)."""
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = response_media_type(request.headers)
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = Response(
            self.encode_json(response_data),
            status_code=sub_response.status_code or 200,
            media_type=sub_response.media_type or JSON,
        )
        response.headers.raw.extend(
            (k, v) for k, v in sub_response.headers.raw if k != b"content-type"
        )
        if sub_response.background:
            response.background = sub_response.background
        return response

    async def execute_single(  # noqa: PLR0917
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: dict[str, Any],
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Run one operation; a mutation over GET is 405, and the status says whether the
        request was refused (see :func:`http_status`)."""
        try:
            result = await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        except HTTPException as refused:
            # A mutation over GET is the wrong method (405); a subscription over HTTP is a
            # bad request whatever the method (400: it streams over WebSocket only).
            cause = refused.__cause__
            if (
                isinstance(cause, InvalidOperationTypeError)
                and cause.operation_type is OperationType.MUTATION
            ):
                raise HTTPException(405, refused.reason) from None
            raise
        status = http_status(result, sub_response.media_type == GRAPHQL_RESPONSE)
        if status is not None:
            sub_response.status_code = status
        return result

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """A request error has no ``data`` entry in ``application/graphql-response+json``."""
        processed = await super().process_result(request, result)
        if is_request_error(result) and wants_graphql_response(request.headers):
            processed.pop("data", None)
        return processed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry answers a malformed request (``query`` not a string, no query, a
        wrong method) in plain text; frontends get the GraphQL error shape with a code."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as refused:
            code = _REQUEST_CODES.get(refused.status_code, "BAD_REQUEST")
            # Only a mutation over GET is refused with 405 here (the route allows GET, POST).
            allow = {"Allow": "POST"} if refused.status_code == 405 else None
            response = error_answer(
                request.headers, refused.status_code, refused.reason, code, allow
            )
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        """JSON too deeply nested to decode, not UTF-8, or with an integer too long for
        Python to parse (a ValueError) is malformed JSON (400)."""
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            raise
        except (RecursionError, ValueError) as error:
            raise json.JSONDecodeError("not decodable JSON", "", 0) from error


async def _refuse_every_key(token: str) -> Principal | None:
    """The verifier of a view built without a key store: fail closed, every key refused."""
    return None


def _asks_for_the_ide_page(scope: Scope, headers: Headers) -> bool:
    """A browser opening the GraphiQL page: a plain GET for HTML, with no query string."""
    return (
        scope["type"] == "http"
        and scope.get("method") == "GET"
        and not scope.get("query_string")
        and "text/html" in headers.get("accept", "")
    )


class GraphQLDoor:
    """The door of ``/graphql``: ``Authorization: Bearer <API key>`` on GET and POST (401
    before anything is read or run), then the key's rate limit (429). The authenticated
    :class:`Principal` rides in the ASGI scope to the GraphQL context.

    A WebSocket upgrade passes without a header (browsers cannot send one; the key comes in
    ``connection_init``, checked by the view); one with a header is checked here. In dev
    mode the GraphiQL page itself is served without the key: static HTML that runs nothing.
    """

    def __init__(
        self, app: ASGIApp, keys: ApiKeys, limiter: RateLimiter, graphiql: bool = False
    ) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.graphiql = graphiql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        token = bearer_token_from(headers)
        if scope["type"] == "websocket" and "authorization" not in headers:
            await self.app(scope, receive, send)
            return
        if token is None and self.graphiql and _asks_for_the_ide_page(scope, headers):
            await graphiql_page()(scope, receive, send)
            return
        try:
            principal = await self.keys.verify(token)
        except Exception:
            log.exception("the API key store cannot be reached")
            await self._refuse(scope, receive, send, 503, KEY_STORE_DOWN, SERVICE_UNAVAILABLE)
            return
        if principal is None:
            log.info(
                "graphql request without a valid API key",
                extra={"fields": {"on": scope["type"], "why": _why(headers, token)}},
            )
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4401})
                return
            await self._refuse(scope, receive, send, 401, NO_KEY, UNAUTHENTICATED)
            return
        wait = self.limiter.take(principal.key_id, 1)
        if wait > 0 and scope["type"] == "http":
            log.info("graphql rate limit", extra={"fields": {"key_id": principal.key_id}})
            seconds = whole_seconds(wait)
            message = f"rate limit of this API key exceeded; retry in {seconds} s"
            await self._refuse(
                scope, receive, send, 429, message, RATE_LIMITED, {"Retry-After": str(seconds)}
            )
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(  # noqa: PLR0917
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        message: str,
        code: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = error_answer(Headers(scope=scope), status, message, code, headers)
        await response(scope, receive, send)


def _why(headers: Headers, token: str | None) -> str:
    """Why a request was refused, for the log (never the key itself)."""
    if "authorization" not in headers:
        return "no Authorization header"
    if token is None:
        return "not a Bearer Authorization header"
    if split_key(token) is None:
        return "not an API key"
    return "unknown, wrong or revoked key"


def create_app(settings: GatewaySettings, keys: ApiKeys | None = None) -> Starlette:
    """Build the application; connections open in its lifespan. ``keys`` defaults to the
    key store in the gateway's MongoDB database."""
    bus = Bus(BusConfig.from_settings(settings, "gateway"))
    clients = ServiceClients(settings)
    ingest = IngestApi(settings, bus)
    key_client = None
    if keys is None:
        keys, key_client = api_keys_from(settings)
    limiter = RateLimiter(settings.graphql_rate_limit_per_s, settings.graphql_rate_limit_burst)
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
        keys=keys,
        live=live,
        settings=settings,
    )
    graphql = GraphQLDoor(
        LimitRequestSize(view, settings.graphql_max_bytes),
        keys,
        limiter,
        settings.graphiql,
    )

    health, close_health = gateway_health(settings, bus, clients, key_store=key_client is not None)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await clients.open()
        await bus.start()
        await live.start()
        watching = asyncio.create_task(health.run(), name="dependency-health")
        try:
            yield
        finally:
            # Each step bounded, so the gateway stops inside Kubernetes' grace even when
            # Kafka or MongoDB is gone; a watchdog ends it if a step still hangs.
            watchdog = arm_watchdog(HARD_LIMIT_S - DRAIN_S)
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            close_health()
            await bounded("live.stop", live.stop(), STEP_S)
            await bounded("bus.stop", bus.stop(), STEP_S)
            await bounded("clients.close", clients.close(), STEP_S)
            if key_client is not None:
                key_client.close()
            await flush_tracing(STEP_S)
            watchdog.cancel()

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
            *(asset_routes() if settings.graphiql else ()),
            Route("/healthz", healthz),
            Route("/readyz", readyz(health)),
            Route("/metrics", metrics),
        ],
        middleware=[
            # Outermost: the span covers CORS answers and every refusal at the doors.
            *([Middleware(HttpSpans)] if tracing.enabled() else []),
            Middleware(IngestCors, origins=settings.ingest_cors_origins, paths=ingest.paths()),
        ],
        lifespan=lifespan,
    )
