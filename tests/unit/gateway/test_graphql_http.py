"""GraphQL over HTTP: the content type the client asks for, the spec's statuses for
``application/graphql-response+json``, queries over GET and no mutations over GET."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import GraphQLError
from strawberry.types import ExecutionResult

from gateway.graphql_http import http_status, refused_for_scope
from gateway.settings import GatewaySettings
from tests.support.keys import SHARED_BEARER, keyed_app

SETTINGS = GatewaySettings(write_key="wk_test_12345")
GRAPHQL_RESPONSE = "application/graphql-response+json"
ASKS = {"Accept": GRAPHQL_RESPONSE, **SHARED_BEARER}
LEGACY = {"Accept": "application/json", **SHARED_BEARER}
MUTATION = 'mutation { createApiKey(name: "n", scopes: ["wallet"]) { apiKey { id } } }'


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


async def test_graphql_response_json_is_answered_in_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers=ASKS)
    assert response.status_code == 200
    assert media_type(response) == GRAPHQL_RESPONSE
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
async def test_otherwise_the_answer_is_application_json(
    client: httpx.AsyncClient, accept: str | None
) -> None:
    headers = dict(SHARED_BEARER) if accept is None else {"Accept": accept, **SHARED_BEARER}
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
    assert response.status_code == 200
    assert media_type(response) == "application/json"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{ __typename "}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": "query($n: Int!) { __typename }", "variables": {"n": "x"}}, "BAD_USER_INPUT"),
        ({"query": "query($n: Int!) { __typename }"}, "BAD_USER_INPUT"),
    ],
    ids=["parse", "validation", "variable", "missing-variable"],
)
async def test_a_request_error_is_400_without_data_in_graphql_response_json(
    client: httpx.AsyncClient, body: dict[str, Any], code: str
) -> None:
    response = await client.post("/graphql", json=body, headers=ASKS)
    assert response.status_code == 400, response.text
    assert media_type(response) == GRAPHQL_RESPONSE
    answer = response.json()
    assert "data" not in answer
    assert code in {e["extensions"]["code"] for e in answer["errors"]}
    # The legacy type keeps 200 for the same request (clients written for it expect that).
    legacy = await client.post("/graphql", json=body, headers=LEGACY)
    assert legacy.status_code == 200
    assert media_type(legacy) == "application/json"


async def test_a_malformed_request_is_400_in_the_asked_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"{not json", headers={**ASKS, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert media_type(response) == GRAPHQL_RESPONSE
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_unauthenticated_is_answered_in_the_asked_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 401
    assert media_type(response) == GRAPHQL_RESPONSE


async def test_a_query_over_get_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ __typename }"}, headers=ASKS)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_mutation_over_get_is_405_and_does_not_run(client: httpx.AsyncClient) -> None:
    listed = await client.post("/graphql", json={"query": "{ apiKeys { id } }"}, headers=ASKS)
    before = len(listed.json()["data"]["apiKeys"])
    for headers in (ASKS, LEGACY):
        response = await client.get("/graphql", params={"query": MUTATION}, headers=headers)
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "POST"
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "METHOD_NOT_ALLOWED"
        assert "mutation" in error["message"].lower()
    listed = await client.post("/graphql", json={"query": "{ apiKeys { id } }"}, headers=ASKS)
    assert len(listed.json()["data"]["apiKeys"]) == before
    # The same mutation over POST runs.
    response = await client.post("/graphql", json={"query": MUTATION}, headers=ASKS)
    assert response.status_code == 200, response.text


def forbidden(field: str) -> GraphQLError:
    return GraphQLError(
        "this API key lacks the scope admin",
        path=[field],
        extensions={"code": "FORBIDDEN", "scope": "admin"},
    )


@pytest.mark.parametrize(
    ("data", "errors", "status"),
    [
        # Every root field refused: 403.
        (None, [forbidden("apiKeys")], 403),
        ({"a": None}, [forbidden("a")], 403),
        ({"a": None, "b": None}, [forbidden("a"), forbidden("b")], 403),
        # Some root field ran (or failed for another reason): 200 with the refused one null.
        ({"a": None, "b": 1}, [forbidden("a")], None),
        ({"a": None, "b": None}, [forbidden("a"), GraphQLError("down", path=["b"])], None),
        # A refusal below the root is not the operation's.
        (
            {"a": {"b": None}},
            [GraphQLError("x", path=["a", "b"], extensions={"code": "FORBIDDEN"})],
            None,
        ),
        ({"a": 1}, None, None),
    ],
)
def test_the_403_rule(
    data: dict[str, Any] | None, errors: list[GraphQLError] | None, status: int | None
) -> None:
    result = ExecutionResult(data=data, errors=errors)
    assert refused_for_scope(result) is (status == 403)
    assert http_status(result, graphql_response=False) == status
    assert http_status(result, graphql_response=True) == status
