"""GraphQL errors with an ``extensions.code`` a frontend can branch on."""

from __future__ import annotations

import grpc
from graphql import GraphQLError
from strawberry.extensions import MaskErrors

BAD_USER_INPUT = "BAD_USER_INPUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"

_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: BAD_USER_INPUT,
    grpc.StatusCode.UNAVAILABLE: SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: SERVICE_UNAVAILABLE,
}


def client_error(message: str, code: str) -> GraphQLError:
    """An error shown to the client as it is, with ``extensions.code``."""
    return GraphQLError(message, extensions={"code": code})


def from_rpc_error(error: grpc.aio.AioRpcError) -> GraphQLError:
    """The GraphQL face of a failed gRPC call; internal details stay in the logs."""
    code = _CODES.get(error.code(), INTERNAL_SERVER_ERROR)
    if code == BAD_USER_INPUT:
        message = error.details() or "invalid input"
    elif code == SERVICE_UNAVAILABLE:
        message = "a backing service is unavailable; retry shortly"
    else:
        message = "internal error"
    return client_error(message, code)


def _is_unexpected(error: GraphQLError) -> bool:
    """A resolver raised something without a code: an internal fault. Query syntax,
    validation and variable errors (raised before any resolver ran, so without a path) are
    the client's to see."""
    return (
        error.original_error is not None
        and error.path is not None
        and "code" not in (error.extensions or {})
    )


def _request_error_code(error: GraphQLError) -> str:
    """The code of an error in the request itself rather than in a resolver."""
    if error.message.startswith("Syntax Error"):
        return GRAPHQL_PARSE_FAILED
    if error.message.startswith("Variable "):
        return BAD_USER_INPUT
    return GRAPHQL_VALIDATION_FAILED


class MaskUnexpectedErrors(MaskErrors):
    """Replaces internal faults with "internal error" and ``INTERNAL_SERVER_ERROR``; the
    details stay in the gateway's log."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_is_unexpected, error_message="internal error")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        """Mask internal faults; give request errors (syntax, validation, variables) the
        code frontends branch on."""
        processed = super()._process_errors(errors)
        for error in processed:
            if error.path is None and "code" not in (error.extensions or {}):
                error.extensions = {**(error.extensions or {}), "code": _request_error_code(error)}
        return processed

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        """The masked error, with the code frontends branch on."""
        masked = super().anonymise_error(error)
        masked.extensions = {"code": INTERNAL_SERVER_ERROR}
        return masked
