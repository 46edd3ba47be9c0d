"""GraphQL errors with an ``extensions.code`` a frontend can branch on, and messages that say
what is wrong without echoing what the client sent."""

from __future__ import annotations

import re

import grpc
from graphql import GraphQLError, VariableDefinitionNode, print_ast
from graphql.language import ValueNode, VariableNode
from starlette.responses import JSONResponse
from strawberry.extensions import MaskErrors

BAD_USER_INPUT = "BAD_USER_INPUT"
SERVICE_UNAVAILABLE = "UNAVAILABLE"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
UNAUTHENTICATED = "UNAUTHENTICATED"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"

# Longest request-error message shown: a name in the query can be as long as the request.
MAX_MESSAGE_CHARS = 300

_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: BAD_USER_INPUT,
    grpc.StatusCode.UNAVAILABLE: SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: SERVICE_UNAVAILABLE,
}
# The parser quotes the token it did not expect: "found String 'ada@example.com'".
_TOKEN_VALUE = re.compile(r"\b(Name|Int|Float|String|BlockString|Comment) '.*'", re.DOTALL)
# Where a value error starts quoting the value: ", found ...", "; found: ...", ": ...".
_ECHOED_VALUE = re.compile(r"(?:[,;] found:? |: ).*", re.DOTALL)
# An unknown enum value is the client's spelling of a schema word, not data: it is kept.
_UNKNOWN_ENUM_VALUE = re.compile(
    r"Value '[_A-Za-z][_0-9A-Za-z]{0,63}' does not exist in '[_0-9A-Za-z]+' enum\."
)


def client_error(message: str, code: str) -> GraphQLError:
    """An error shown to the client as it is, with ``extensions.code``."""
    return GraphQLError(message, extensions={"code": code})


def error_response(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A GraphQL-shaped error for a request refused before it reached GraphQL."""
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers=headers)


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


def is_unexpected(error: GraphQLError) -> bool:
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
    # A lookup input with not exactly one of its keys is bad input, as a variable's would be.
    if error.message.startswith(("Variable ", "OneOf Input Object ")):
        return BAD_USER_INPUT
    return GRAPHQL_VALIDATION_FAILED


def error_code(error: GraphQLError) -> str:
    """The ``extensions.code`` the client sees for ``error``."""
    if is_unexpected(error):
        return INTERNAL_SERVER_ERROR
    code = (error.extensions or {}).get("code")
    if isinstance(code, str):
        return code
    return _request_error_code(error) if error.path is None else INTERNAL_SERVER_ERROR


def _request_error_message(error: GraphQLError, code: str) -> str:
    """The message of a request error without the values the client sent (they may be a
    customer's e-mail or phone), and bounded in length."""
    message = error.message
    nodes = error.nodes or []
    if code == GRAPHQL_PARSE_FAILED:
        message = _TOKEN_VALUE.sub(r"\1", message)
    elif message.startswith("Variable '$") and " invalid value" in message:
        unknown_enum_value = _UNKNOWN_ENUM_VALUE.search(message)
        message = _ECHOED_VALUE.sub("", message, count=1).rstrip(".")
        definition = next((n for n in nodes if isinstance(n, VariableDefinitionNode)), None)
        if unknown_enum_value is not None:
            message += f": {unknown_enum_value.group(0)}"
        elif definition is not None:
            message += f"; expected type '{print_ast(definition.type)}'."
    elif any(isinstance(n, ValueNode) and not isinstance(n, VariableNode) for n in nodes):
        # A literal argument of the wrong type; its location says which.
        message = _ECHOED_VALUE.sub("", message, count=1).rstrip(".") + "."
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message


class MaskUnexpectedErrors(MaskErrors):
    """Replaces internal faults with "internal error" and ``INTERNAL_SERVER_ERROR``; the
    details stay in the gateway's log."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="internal error")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        """Mask internal faults; give request errors (syntax, validation, variables) the
        code frontends branch on and a message that does not echo the request."""
        processed = super()._process_errors(errors)
        return [_as_request_error(e) if e.path is None else e for e in processed]

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        """The masked error, with the code frontends branch on."""
        masked = super().anonymise_error(error)
        masked.extensions = {"code": INTERNAL_SERVER_ERROR}
        return masked


def _as_request_error(error: GraphQLError) -> GraphQLError:
    """A copy of a request error (the original may be cached with its document) with its
    code and a message that does not echo the request."""
    extensions = error.extensions or {}
    code = extensions.get("code")
    if not isinstance(code, str):
        code = _request_error_code(error)
    return GraphQLError(
        _request_error_message(error, code),
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions={**extensions, "code": code},
    )
