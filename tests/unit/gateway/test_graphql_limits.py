"""Bounds on one GraphQL request: its size on the wire (refused before it is read whole or
parsed), and the tokens, depth and aliases of its document (refused before anything runs).

The app runs without its lifespan, so no service client is open: an operation that reached
a resolver would come back as an internal error, never as the limit's error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from gateway.clients import ServiceClients
from gateway.loaders import make_loaders
from gateway.schema import build_schema
from gateway.scopes import ALL_SCOPES, Principal
from gateway.settings import GatewaySettings
from lodestar.v1 import identity_pb2, profile_pb2
from tests.support.keys import SHARED_BEARER, keyed_app

SETTINGS = GatewaySettings(write_key="wk_test_12345")
BEARER = SHARED_BEARER


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def post(client: httpx.AsyncClient, query: str, **body: Any) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, **body}, headers=BEARER)


def refused(response: httpx.Response) -> list[dict[str, Any]]:
    """The errors of an operation refused before execution: no data, every error coded."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None
    errors: list[dict[str, Any]] = body["errors"]
    assert all(e["extensions"]["code"] != "INTERNAL_SERVER_ERROR" for e in errors)
    return errors


def too_large(response: httpx.Response) -> str:
    assert response.status_code == 413, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    message: str = error["message"]
    assert str(SETTINGS.graphql_max_bytes) in message
    return message


def test_limit_defaults_are_bounded_but_roomy() -> None:
    assert 16 * 1024 <= SETTINGS.graphql_max_bytes <= 1024 * 1024
    assert 1_000 <= SETTINGS.graphql_max_tokens <= 5_000
    assert 10 <= SETTINGS.graphql_max_depth <= 15
    assert 20 <= SETTINGS.graphql_max_aliases <= 50


async def test_a_300_kb_query_is_413(client: httpx.AsyncClient) -> None:
    query = "{ " + "segments { id name } " * 15_000 + "}"
    assert len(query) > 300_000
    too_large(await post(client, query))


async def test_a_long_get_query_string_is_413() -> None:
    # The HTTP client refuses URLs over 64 KiB, so the limit is lowered to show the check.
    small = SETTINGS.model_copy(update={"graphql_max_bytes": 4_096})
    query = "{ " + "segments { id } " * 1_000 + "}"
    transport = httpx.ASGITransport(app=keyed_app(small))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/graphql", params={"query": query}, headers=BEARER)
    assert response.status_code == 413, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "4096 bytes" in error["message"]


async def test_large_variables_count_too(client: httpx.AsyncClient) -> None:
    blob = "x" * (SETTINGS.graphql_max_bytes + 1)
    too_large(await post(client, "{ __typename }", variables={"blob": blob}))


async def test_an_oversize_stream_is_refused_without_reading_the_rest(
    client: httpx.AsyncClient,
) -> None:
    chunk = b" " * 8 * 1024
    total = 100
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        # Chunked, no Content-Length: the door has to count.
        for n in range(total):
            sent.append(n)
            yield chunk

    response = await client.post(
        "/graphql", content=body(), headers={**BEARER, "Content-Type": "application/json"}
    )
    too_large(response)
    assert len(sent) < total


async def test_a_declared_oversize_body_is_refused_before_reading(
    client: httpx.AsyncClient,
) -> None:
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        sent.append(1)
        yield b"{}"

    headers = {
        **BEARER,
        "Content-Type": "application/json",
        "Content-Length": str(SETTINGS.graphql_max_bytes + 1),
    }
    too_large(await client.post("/graphql", content=body(), headers=headers))
    assert sent == []


async def test_a_request_just_under_the_limit_runs(client: httpx.AsyncClient) -> None:
    padding = " " * (SETTINGS.graphql_max_bytes - 200)
    response = await post(client, "{ __typename }" + padding)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_1000_aliases_of_segments_are_refused(client: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f"s{n}: segments {{ id }}" for n in range(1_000)) + " }"
    assert len(query.encode()) < SETTINGS.graphql_max_bytes
    [error] = refused(await post(client, query))
    # Refused by the parser: too many tokens, before validation or any resolver.
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert f"more than {SETTINGS.graphql_max_tokens} tokens" in error["message"]


async def test_too_many_aliases_are_refused(client: httpx.AsyncClient) -> None:
    count = SETTINGS.graphql_max_aliases + 1
    query = "{ " + " ".join(f"s{n}: segments {{ id }}" for n in range(count)) + " }"
    errors = refused(await post(client, query))
    assert [e["extensions"]["code"] for e in errors] == ["GRAPHQL_VALIDATION_FAILED"]
    assert (
        f"{count} aliases found. Allowed: {SETTINGS.graphql_max_aliases}" in (errors[0]["message"])
    )


async def test_aliases_up_to_the_limit_run(client: httpx.AsyncClient) -> None:
    count = SETTINGS.graphql_max_aliases
    query = "{ " + " ".join(f"t{n}: __typename" for n in range(count)) + " }"
    response = await post(client, query)
    assert response.json() == {"data": {f"t{n}": "Query" for n in range(count)}}


async def test_too_deep_a_query_is_refused(client: httpx.AsyncClient) -> None:
    depth = SETTINGS.graphql_max_depth + 2
    query = "query Deep { " + "a { " * depth + "b" + " }" * depth + " }"
    errors = refused(await post(client, query))
    assert {e["extensions"]["code"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    assert any(
        f"'Deep' exceeds maximum operation depth of {SETTINGS.graphql_max_depth}" in e["message"]
        for e in errors
    )


async def test_too_many_tokens_are_refused(client: httpx.AsyncClient) -> None:
    query = "{ " + "__typename " * SETTINGS.graphql_max_tokens + "}"
    [error] = refused(await post(client, query))
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert f"more than {SETTINGS.graphql_max_tokens} tokens" in error["message"]


async def test_comments_count_as_tokens(client: httpx.AsyncClient) -> None:
    query = "{ __typename }\n" + "#\n" * SETTINGS.graphql_max_tokens
    [error] = refused(await post(client, query))
    assert f"more than {SETTINGS.graphql_max_tokens} tokens" in error["message"]


async def test_introspection_as_graphiql_sends_it_runs() -> None:
    # Introspection runs in dev mode only (where GraphiQL is served); the limits let it pass.
    from graphql import get_introspection_query

    transport = httpx.ASGITransport(app=keyed_app(SETTINGS.model_copy(update={"graphiql": True})))

    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await post(client, query)
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_a_repeated_query_is_answered_from_the_caches(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        errors = refused(await post(client, "{ customer { nope } }"))
        assert {e["extensions"]["code"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    for _ in range(2):
        assert (await post(client, "{ __typename }")).json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ __typename }", "variables": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b"[" * 30_000,
        b"\xff\xfe{}",
        b'{"query": "{ __typename }", "variables": {"a": "\xff"}}',
    ],
    ids=["deep-variables", "deep-array", "not-utf8-bom", "not-utf8-inside"],
)
async def test_malformed_json_is_400_not_500(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/graphql", content=body, headers={**BEARER, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text


async def test_deep_get_variables_are_400_not_500(client: httpx.AsyncClient) -> None:
    params = {"query": "{ __typename }", "variables": "[" * 5_000 + "]" * 5_000}
    response = await client.get("/graphql", params=params, headers=BEARER)
    assert response.status_code == 400, response.text


def fake_clients() -> tuple[ServiceClients, list[profile_pb2.ListTimelineRequest]]:
    """Service clients that know one customer and record the timeline requests."""
    asked: list[profile_pb2.ListTimelineRequest] = []

    async def batch_get_identities(
        request: identity_pb2.BatchGetIdentitiesRequest,
    ) -> identity_pb2.BatchGetIdentitiesResponse:
        return identity_pb2.BatchGetIdentitiesResponse(
            identities={
                i: identity_pb2.CustomerIdentities(customer_id=i) for i in request.customer_ids
            }
        )

    async def batch_get_profiles(
        request: profile_pb2.BatchGetProfilesRequest,
    ) -> profile_pb2.BatchGetProfilesResponse:
        return profile_pb2.BatchGetProfilesResponse(
            profiles={i: profile_pb2.Profile(customer_id=i) for i in request.customer_ids}
        )

    async def batch_list_timeline(
        request: profile_pb2.BatchListTimelineRequest,
    ) -> profile_pb2.BatchListTimelineResponse:
        asked.extend(request.requests)
        return profile_pb2.BatchListTimelineResponse(
            responses=[profile_pb2.ListTimelineResponse() for _ in request.requests]
        )

    clients = SimpleNamespace(
        identity=SimpleNamespace(BatchGetIdentities=batch_get_identities),
        profile=SimpleNamespace(
            BatchGetProfiles=batch_get_profiles, BatchListTimeline=batch_list_timeline
        ),
    )
    return cast(ServiceClients, clients), asked


@pytest.fixture
def timeline() -> Any:
    clients, asked = fake_clients()
    schema = build_schema(SETTINGS)

    async def run(first: int) -> dict[str, Any]:
        result = await schema.execute(
            'query($first: Int!) { customer(by: {id: "c-1"}) { timeline(first: $first) '
            "{ edges { node { name } } } } }",
            variable_values={"first": first},
            context_value={
                "clients": clients,
                "loaders": make_loaders(clients),
                "principal": Principal(key_id="k", name="test", scopes=ALL_SCOPES),
            },
        )
        return {
            "data": result.data,
            "errors": [e.formatted for e in result.errors or []],
            "asked": [r.page_size for r in asked],
        }

    return run


# (2**31 - 1 is refused earlier by the cost limit: test_graphql_cost.py.)
@pytest.mark.parametrize("first", [0, -1, 201])
async def test_timeline_first_is_bounded_before_calling_the_service(
    timeline: Any, first: int
) -> None:
    outcome = await timeline(first)
    assert outcome["asked"] == []
    [error] = outcome["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "first must be between 1 and 200" in error["message"]


@pytest.mark.parametrize("first", [1, 20, 200])
async def test_timeline_first_within_bounds_is_asked_for(timeline: Any, first: int) -> None:
    outcome = await timeline(first)
    assert outcome["errors"] == []
    assert outcome["asked"] == [first]


async def test_the_limits_follow_the_settings() -> None:
    strict = SETTINGS.model_copy(
        update={"graphql_max_aliases": 1, "graphql_max_depth": 3, "graphql_max_tokens": 20}
    )
    transport = httpx.ASGITransport(app=keyed_app(strict))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        aliases = refused(await post(http, "{ a: __typename b: __typename }"))
        assert "2 aliases found. Allowed: 1" in aliases[0]["message"]
        deep = refused(await post(http, "{ a { b { c { d { e } } } } }"))
        assert any("maximum operation depth of 3" in e["message"] for e in deep)
        tokens = refused(await post(http, "{ " + "__typename " * 21 + "}"))
        assert "more than 20 tokens" in tokens[0]["message"]


async def test_a_repeated_document_is_not_walked_again_to_find_its_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Hashing a document walks its whole tree: a cache keyed by the document did that on
    # every request, the cost of validating a small query all over again.
    from graphql import DocumentNode

    hashed: list[int] = []
    real_hash = DocumentNode.__hash__

    def counted(node: DocumentNode) -> int:
        hashed.append(1)
        return real_hash(node)

    monkeypatch.setattr(DocumentNode, "__hash__", counted)
    schema = build_schema(SETTINGS)
    query = "query Twice { __typename }"
    assert (await schema.execute(query)).data == {"__typename": "Query"}
    hashed.clear()
    assert (await schema.execute(query)).data == {"__typename": "Query"}
    assert hashed == []
