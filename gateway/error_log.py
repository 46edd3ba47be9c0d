"""What the gateway logs about a failed GraphQL operation: its code, operation name and
path, never the query source, the variables or the error message (each may quote a
customer's e-mail or phone). Client errors are INFO, a backing service down is WARNING, and
only faults are ERROR, with the exception's type and stack but not its message."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import grpc
from graphql import GraphQLError
from strawberry.types import ExecutionContext

from gateway.errors import INTERNAL_SERVER_ERROR, SERVICE_UNAVAILABLE, error_code

log = logging.getLogger("gateway.graphql")

# Operation names and path keys are the client's words: logged, but never unbounded.
MAX_NAME_CHARS = 64
MAX_PATH_KEYS = 16


def _bounded(name: object) -> str:
    text = str(name)
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


def _operation_name(context: ExecutionContext | None) -> str | None:
    if context is None:
        return None
    name = context.operation_name
    return None if name is None else _bounded(name)


def _cause(error: GraphQLError) -> BaseException | None:
    """What was raised: the resolver's exception, or what a coded error was raised from."""
    cause: BaseException | None = error
    for _ in range(8):  # a short chain; never loop on a cyclic one
        if not isinstance(cause, GraphQLError):
            break
        cause = cause.original_error or cause.__cause__
    return None if isinstance(cause, GraphQLError) else cause


def fields_of(error: GraphQLError, context: ExecutionContext | None) -> dict[str, Any]:
    """The log fields of one error: nothing the client wrote but its operation name and
    the path's keys."""
    fields: dict[str, Any] = {"code": error_code(error), "operation": _operation_name(context)}
    if error.path:
        fields["path"] = ".".join(_bounded(key) for key in error.path[:MAX_PATH_KEYS])
    cause = _cause(error)
    if cause is not None:
        fields["error_type"] = type(cause).__name__
        if isinstance(cause, grpc.aio.AioRpcError):
            fields["rpc_code"] = cause.code().name
    return fields


def log_errors(errors: list[GraphQLError], context: ExecutionContext | None) -> None:
    """Log each error of one operation at the level its code deserves."""
    for error in errors:
        fields = fields_of(error, context)
        code = fields["code"]
        if code == INTERNAL_SERVER_ERROR:
            cause = _cause(error)
            if cause is not None:
                # The stack says where; the message is left out as it may quote a value.
                fields["traceback"] = "".join(traceback.format_tb(cause.__traceback__))
            log.error("graphql operation failed", extra={"fields": fields})
        elif code == SERVICE_UNAVAILABLE:
            log.warning("graphql operation met an unavailable service", extra={"fields": fields})
        else:
            log.info("graphql operation refused", extra={"fields": fields})
