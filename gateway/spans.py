"""Tracing at the gateway's doors: a SERVER span per HTTP request and a span per GraphQL
operation (both added only when tracing is on, see :mod:`services.platform.tracing`).

Spans name the route template and the operation's type and name, never the path, the query
string, the body, the query source or its variables.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from services.platform import tracing

# A GraphQL name (the spec's Name), bounded: anything else is left off the span.
_OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")


class HttpSpans:
    """ASGI middleware: one SERVER span per HTTP request, named ``METHOD /route`` with the
    response status; an outside client's well-formed ``traceparent`` becomes its parent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        traceparent = Headers(scope=scope).get(tracing.TRACEPARENT)
        with tracing.http_server_span(method, traceparent) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                # The router put the matched route in the scope; unmatched paths stay unnamed.
                route = getattr(scope.get("route"), "path", None)
                tracing.http_done(span, method, route if isinstance(route, str) else None, status)


def operation_name(name: str | None) -> str | None:
    """The operation's name when it is a GraphQL name of at most 100 characters."""
    if name is None or _OPERATION_NAME.fullmatch(name) is None:
        return None
    return name


class GraphQLSpans(SchemaExtension):
    """A span around each GraphQL operation (parse, validate, execute), named after its type
    (``graphql query``) with the operation's name as an attribute; the resolvers' gRPC calls
    are its children."""

    def on_operation(self) -> Iterator[None]:
        """Open the span for the whole operation; type and name are known after it ran."""
        with tracing.tracer("gateway.graphql").start_as_current_span(
            "graphql", record_exception=False
        ) as span:
            yield
            context = self.execution_context
            try:
                kind: str | None = context.operation_type.value
            except Exception:
                # No parsable document, or no such operation: the span stays "graphql".
                kind = None
            if kind is not None:
                span.update_name(f"graphql {kind}")
                span.set_attribute("graphql.operation.type", kind)
            name = operation_name(context.operation_name)
            if name is not None:
                span.set_attribute("graphql.operation.name", name)
            result = context.result
            errors = getattr(result, "errors", None) if result is not None else None
            if errors:
                span.set_attribute("graphql.errors", len(errors))
                tracing.mark_failed(span)


def graphql_spans() -> list[type[SchemaExtension]]:
    """The schema extensions of tracing: none when tracing is off."""
    return [GraphQLSpans] if tracing.enabled() else []
