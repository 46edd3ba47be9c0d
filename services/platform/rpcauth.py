"""The services' gRPC door: every call carries the platform's service token.

Servers refuse a call without ``authorization: Bearer <LODESTAR_GRPC_TOKEN>`` with
UNAUTHENTICATED before its request is even decoded; only the health service answers without
it (Kubernetes' probes cannot send metadata). Clients made by ``client_channel`` add it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import grpc

# Kubernetes probes and the launchers' readiness checks call this without credentials.
_OPEN_PREFIX = "/grpc.health.v1.Health/"
_REFUSAL = "missing or wrong service token; send authorization: Bearer <LODESTAR_GRPC_TOKEN>"


def token_matches(metadata: Any, token: str) -> bool:
    """Whether call metadata holds ``authorization: Bearer <token>`` (constant time)."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, given = value.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return True
    return False


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)


async def _refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
    yield  # pragma: no cover - an async generator that never yields a message


def _refusing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape that refuses without decoding the request."""
    if handler.response_streaming:
        behavior = _refuse_stream
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(behavior)
        return grpc.unary_stream_rpc_method_handler(behavior)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse)
    return grpc.unary_unary_rpc_method_handler(_refuse)


class RequireServiceToken(grpc.aio.ServerInterceptor):
    """Lets a call through only with the service token (health checks excepted)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(_OPEN_PREFIX):
            return handler
        if token_matches(handler_call_details.invocation_metadata, self.token):
            return handler
        return _refusing(handler)


class SendServiceToken(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the service token to every unary call of a channel."""

    def __init__(self, token: str) -> None:
        self.metadata = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        metadata.add(*self.metadata)
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SendServiceTokenSync(grpc.UnaryUnaryClientInterceptor):
    """The blocking API's twin of :class:`SendServiceToken` (command-line tools)."""

    def __init__(self, token: str) -> None:
        self.metadata = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        details = _CallDetails(
            client_call_details.method,
            client_call_details.timeout,
            [*(client_call_details.metadata or ()), self.metadata],
            client_call_details.credentials,
            client_call_details.wait_for_ready,
            getattr(client_call_details, "compression", None),
        )
        return continuation(details, request)


def blocking_channel(target: str, token: str | None) -> grpc.Channel:
    """A blocking-API channel to ``target`` that sends the service token when given one."""
    channel = grpc.insecure_channel(target)
    return grpc.intercept_channel(channel, _SendServiceTokenSync(token)) if token else channel
