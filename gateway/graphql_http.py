"""GraphQL over HTTP: the content type a client asked for, and the status an answer has.

- ``Accept: application/graphql-response+json`` gets that content type, and a request error
  (the document did not parse or validate, a variable did not coerce: nothing ran, there is
  no ``data``) is 400; ``application/json`` (the default) keeps 200 for every GraphQL result.
- Either way, an operation refused for a missing scope that leaves no data (every root field
  it asked for was refused) is 403, with the ``FORBIDDEN`` error naming the scope. An
  operation where some root fields ran is 200 with the refused ones null.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse
from strawberry.types import ExecutionResult

from gateway.errors import error_response
from gateway.scopes import FORBIDDEN

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
# Where the authenticated principal rides in the ASGI scope, from the door to the context.
PRINCIPAL = "lodestar.principal"


def wants_graphql_response(headers: Mapping[str, str]) -> bool:
    """Whether the client accepts ``application/graphql-response+json``."""
    return GRAPHQL_RESPONSE in headers.get("accept", "")


def response_media_type(headers: Mapping[str, str]) -> str:
    """The content type of the answer to a request with these headers."""
    return GRAPHQL_RESPONSE if wants_graphql_response(headers) else JSON


def is_request_error(result: ExecutionResult) -> bool:
    """Nothing ran: the errors are the request's (no path), and there is no data."""
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors or ())
    )


def refused_for_scope(result: ExecutionResult) -> bool:
    """Every root field the operation asked for was refused for a missing scope."""
    refused = {
        error.path[0]
        for error in result.errors or ()
        if error.path and len(error.path) == 1 and (error.extensions or {}).get("code") == FORBIDDEN
    }
    if not refused:
        return False
    if result.data is None:
        return True
    return all(value is None for value in result.data.values()) and set(result.data) <= refused


def http_status(result: ExecutionResult, graphql_response: bool) -> int | None:
    """The status of a GraphQL result (None: 200)."""
    if refused_for_scope(result):
        return 403
    if graphql_response and is_request_error(result):
        return 400
    return None


def error_answer(
    headers: Mapping[str, str],
    status: int,
    message: str,
    code: str,
    extra_headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A GraphQL-shaped error for a request refused before GraphQL ran, in the content type
    the client asked for."""
    response = error_response(status, message, code, extra_headers)
    response.headers["content-type"] = response_media_type(headers)
    return response
