"""Bounds on one GraphQL request, so that no single request can hold the event loop the
ingest API shares: its size on the wire, checked before anything is parsed, and the tokens,
depth and aliases of its document, checked before anything runs."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from graphql import GraphQLError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.schema import validate_document

from gateway.cost import CostCache, QueryCostLimiter
from gateway.errors import PAYLOAD_TOO_LARGE, error_response
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Distinct documents kept parsed and validated: a frontend sends a few dozen.
CACHE_SIZE = 256
# RFC 6455 close code for a message too big to process.
WS_MESSAGE_TOO_BIG = 1009


class _ClientGone(Exception):
    pass


class LimitRequestSize:
    """Refuses a GraphQL request larger than ``max_bytes`` with 413 before it is read whole:
    the GET query string, a declared Content-Length, then the body as it streams in. A
    WebSocket message over the limit closes the connection (1009) before it is decoded."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._body(scope, receive)
        except _ClientGone:
            return
        if body is None:
            log.info("graphql request too large", extra={"fields": {"limit": self.max_bytes}})
            response = error_response(
                413,
                f"the GraphQL request is larger than {self.max_bytes} bytes",
                PAYLOAD_TOO_LARGE,
                # The rest of the body is never read, so the connection cannot be reused.
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as the request shows it is over the limit."""
        if len(scope.get("query_string", b"")) > self.max_bytes:
            return None
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        closed = False

        async def bounded_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.receive" and self._too_big(message):
                log.info("graphql message too large", extra={"fields": {"limit": self.max_bytes}})
                closed = True
                await send({"type": "websocket.close", "code": WS_MESSAGE_TOO_BIG})
                return {"type": "websocket.disconnect", "code": WS_MESSAGE_TOO_BIG}
            return message

        async def send_until_closed(message: Message) -> None:
            # Once this door closed the socket, what the app still sends has nowhere to go.
            if not closed:
                await send(message)

        await self.app(scope, bounded_receive, send_until_closed)

    def _too_big(self, message: Message) -> bool:
        text: str | None = message.get("text")
        data: bytes | None = message.get("bytes")
        if text is not None:
            return len(text) > self.max_bytes or len(text.encode()) > self.max_bytes
        return data is not None and len(data) > self.max_bytes


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body already read, then the client's next
    message (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _ParserCache(ParserCache):
    """Strawberry's parser cache, except that a document which does not parse is left to
    Strawberry's own parse: that reports the syntax error inside the operation, where the
    errors get their code (the cache's error would escape the operation)."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        yield


class _ValidationCache(SchemaExtension):
    """The validation errors (none, mostly) of each document already validated, keyed by its
    source text and the rules: Strawberry's own cache is keyed by the parsed document, and
    hashing a document walks its whole tree on every request. A document given without
    its source is validated by Strawberry as usual."""

    def __init__(self, cache: OrderedDict[tuple[Any, ...], tuple[GraphQLError, ...]]) -> None:
        self.cache = cache

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is None or context.graphql_document is None:
            yield
            return
        key = (context.query, tuple(context.validation_rules))
        errors = self.cache.get(key)
        if errors is None:
            errors = tuple(
                validate_document(context.schema._schema, context.graphql_document, key[1])
            )
            self.cache[key] = errors
            if len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(key)
        context.pre_execution_errors = list(errors)
        yield


def document_limits(settings: GatewaySettings) -> list[Callable[[], SchemaExtension]]:
    """Strawberry extensions, one instance per operation, that bound the document before it
    runs: its tokens while parsing (the parser stops at the limit), its depth and aliases
    while validating, its cost (which needs the variables) once validated; and caches, so a
    repeated document is parsed and validated once."""
    # Built once: the validation cache is keyed by the rule classes.
    rules = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    max_tokens = settings.graphql_max_tokens
    max_cost = settings.graphql_max_cost
    costs = CostCache(CACHE_SIZE)
    validated: OrderedDict[tuple[Any, ...], tuple[GraphQLError, ...]] = OrderedDict()
    return [
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: AddValidationRules(rules),
        lambda: _ParserCache(maxsize=CACHE_SIZE),
        lambda: _ValidationCache(validated),
        lambda: QueryCostLimiter(max_cost=max_cost, cache=costs),
    ]
