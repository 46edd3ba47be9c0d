"""The GraphQL errors of the mutations: a failed RPC with the code a frontend branches on,
and where the service said which part of the input was wrong, that part's JSON path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from graphql import GraphQLError
from strawberry.types import Info

from gateway.errors import BAD_USER_INPUT, MAX_MESSAGE_CHARS, client_error, from_rpc_error
from gateway.settings import GatewaySettings
from services.platform.errors import ERROR_PATH_KEY

Req = TypeVar("Req")
Resp = TypeVar("Resp")
NOT_FOUND = "NOT_FOUND"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
ALREADY_EXISTS = "ALREADY_EXISTS"
# Codes the read side has no use for; the services' messages name what is wrong.
_CODES = {
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS: ALREADY_EXISTS,
}


def bounded(message: str) -> str:
    """``message`` cut to what an error shows."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "\u2026"


def input_error(message: str, path: str | None = None) -> GraphQLError:
    """BAD_USER_INPUT naming what is wrong and, when known, its JSON path."""
    error = client_error(bounded(message), BAD_USER_INPUT)
    if path is not None:
        error.extensions = {**(error.extensions or {}), "path": path}
    return error


def _error_path(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_PATH_KEY and isinstance(value, str):
            return value
    return None


def rpc_error(error: grpc.aio.AioRpcError) -> GraphQLError:
    """The GraphQL face of a failed call of a mutation."""
    code = _CODES.get(error.code())
    if code is not None:
        return client_error(bounded(error.details() or code.lower()), code)
    converted = from_rpc_error(error)
    path = _error_path(error) if error.code() == grpc.StatusCode.INVALID_ARGUMENT else None
    if path is not None:
        converted = input_error(converted.message, path)
    elif error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        converted = client_error(bounded(converted.message), BAD_USER_INPUT)
    return converted


def long_call_timeout(info: Info) -> float | None:
    """The deadline of calls that refit models (the gateway's setting), when known."""
    settings = getattr(info.context["clients"], "settings", None)
    return settings.graphql_long_call_timeout_s if isinstance(settings, GatewaySettings) else None


async def call(rpc: Callable[[Req], Awaitable[Resp]], build: Callable[[], Req]) -> Resp:
    """``rpc`` with the request ``build`` makes; its failures as coded GraphQL errors."""
    try:
        request = build()
    except ValueError:
        # Protobuf refuses text it cannot encode (lone surrogates): the arguments' fault.
        raise input_error("the arguments must be valid Unicode text") from None
    try:
        return await rpc(request)
    except grpc.aio.AioRpcError as error:
        raise rpc_error(error) from error
