"""The WebSocket door of GraphQL (graphql-transport-ws): authentication in ``connection_init``,
well-formed messages, a bound on subscriptions per connection, and keep-alive pings.

Browsers cannot set headers on a WebSocket, so the upgrade needs no ``Authorization``; the
client sends its key in ``connection_init`` as ``{"authorization": "Bearer <key>"}`` or
``{"apiKey": "<key>"}``. Close codes: 4403 wrong or missing key, 4401 a ``subscribe`` before
the connection was acknowledged, 4400 a malformed message, 4408 no ``connection_init`` in
time, 1009 a message over the size limit (:mod:`gateway.limits`), 1011 the key could not be
checked (the key store failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from graphql import GraphQLError
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)

from gateway.auth import same_secret
from gateway.scopes import ALL_SCOPES, Principal

log = logging.getLogger(__name__)

# Verifies an API key: the principal it stands for, or None.
KeyVerifier = Callable[[str], Awaitable[Principal | None]]

# extensions.code of a subscribe refused because the connection runs its maximum.
TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
# Longest operation id accepted (clients use counters or UUIDs).
MAX_OPERATION_ID_CHARS = 128
CLOSE_BAD_MESSAGE = 4400
# RFC 6455: the server met a condition that kept it from serving (the key store failed).
CLOSE_SERVER_ERROR = 1011
# Where connection_init may carry the key.
_KEY_PARAMS = frozenset({"authorization", "Authorization", "apiKey"})


def single_key_verifier(api_key: str) -> KeyVerifier:
    """Verification over the one ``LODESTAR_API_KEY``: it holds every scope."""
    principal = Principal(key_id="api-key", name="LODESTAR_API_KEY", scopes=ALL_SCOPES)

    async def verify(token: str) -> Principal | None:
        return principal if same_secret(token, api_key) else None

    return verify


def key_from(params: Mapping[str, object]) -> str | None:
    """The API key a ``connection_init`` payload carries, if any."""
    authorization = params.get("authorization", params.get("Authorization"))
    if isinstance(authorization, str):
        scheme, _, token = authorization.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    api_key = params.get("apiKey")
    return api_key.strip() or None if isinstance(api_key, str) else None


def message_problem(message: object) -> str | None:
    """What is wrong with a client message, in a fixed text; None when it is well formed
    (Strawberry indexes into it and would fail on other shapes)."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "a message must be a JSON object with a string type"
    if message["type"] in ("subscribe", "complete"):
        id_ = message.get("id")
        if not isinstance(id_, str) or not 0 < len(id_) <= MAX_OPERATION_ID_CHARS:
            return f"id must be a string of 1 to {MAX_OPERATION_ID_CHARS} characters"
    return _payload_problem(message.get("payload")) if message["type"] == "subscribe" else None


def _payload_problem(payload: object) -> str | None:
    """What is wrong with a ``subscribe`` payload, or None."""
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return "subscribe needs a payload object with a string query"
    if not isinstance(payload.get("variables") or {}, dict):
        return "variables must be a JSON object"
    if not isinstance(payload.get("operationName") or "", str):
        return "operationName must be a string"
    return None


class LodestarTransportWS(BaseGraphQLTransportWSHandler[dict[str, Any], None]):
    """Strawberry's graphql-transport-ws handler with the gateway's rules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Seconds between server pings once the connection is acknowledged.
        self.ping_interval_s = float(getattr(self.view, "ws_ping_interval_s", 15.0))
        self._pinger: asyncio.Task[None] | None = None

    async def handle_message(self, message: Message) -> None:
        """Refuse malformed messages with 4400 and a reason naming what is wrong."""
        problem = message_problem(message)
        if problem is not None:
            log.info("graphql websocket message refused", extra={"fields": {"problem": problem}})
            await self.websocket.close(code=CLOSE_BAD_MESSAGE, reason=problem)
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        """Acknowledge (or refuse, 4403) as Strawberry does, then start the pings; when the
        key cannot be checked at all the socket closes 1011 (retry later)."""
        try:
            await super().handle_connection_init(message)
        except VerificationFailed:
            log.exception("verifying a websocket API key failed")
            await self.websocket.close(
                code=CLOSE_SERVER_ERROR, reason="the API key could not be checked; retry later"
            )
            return
        if self.connection_acknowledged and self._pinger is None:
            self._pinger = asyncio.create_task(self._ping(), name="graphql-ws-ping")

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """Refuse one operation more than the limit with an error naming the limit."""
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and limit is not None
            and message["id"] not in self.operations
            and len(self.operations) >= limit
        ):
            error = GraphQLError(
                f"at most {limit} subscriptions may run at once on one connection",
                extensions={"code": TOO_MANY_SUBSCRIPTIONS, "limit": limit},
            )
            log.info("graphql subscription over the limit", extra={"fields": {"limit": limit}})
            await self.send_message(
                cast(Message, {"id": message["id"], "type": "error", "payload": [error.formatted]})
            )
            return
        await super().handle_subscribe(message)

    async def _ping(self) -> None:
        """graphql-transport-ws ``ping`` at an interval: idle proxies keep the socket open
        and the client can tell a dead server from a quiet one."""
        with contextlib.suppress(WebSocketDisconnected, OSError, RuntimeError):
            while True:
                await asyncio.sleep(self.ping_interval_s)
                await self.send_message({"type": "ping"})

    async def shutdown(self) -> None:
        """Stop the pings with the connection."""
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        await super().shutdown()


class VerificationFailed(Exception):
    """The key could not be checked (the key store failed): a fault, not a refusal."""


async def authenticate(context: dict[str, Any], verify: KeyVerifier) -> None:
    """Put the principal of the ``connection_init`` key into the connection's context, or
    refuse the connection (Strawberry closes it with 4403). The key itself is then removed
    from the context, so no resolver or error report can see it."""
    params = context.get("connection_params")
    token = key_from(params) if isinstance(params, dict) else None
    if isinstance(params, dict):
        context["connection_params"] = {k: v for k, v in params.items() if k not in _KEY_PARAMS}
    try:
        principal = await verify(token) if token is not None else None
    except Exception as error:
        raise VerificationFailed from error
    if principal is None:
        log.info("graphql websocket without a valid API key")
        raise ConnectionRejectionError({"reason": "missing or wrong API key"})
    context["principal"] = principal
