"""``customer { groups }`` over HTTP, in process, against fake gRPC stubs: one
BatchListCustomerGroups per query, every field mapped, a failing profile service turned into
a GraphQL error with a code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import grpc
import httpx
from google.protobuf.struct_pb2 import Struct

from gateway.app import LodestarGraphQL
from gateway.clients import ServiceClients
from gateway.schema import build_schema
from gateway.settings import GatewaySettings
from lodestar.v1 import identity_pb2, profile_pb2
from tests.support.keys import as_principal

SCHEMA = build_schema(GatewaySettings(write_key="wk_test_12345"))
CREATED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def acme() -> profile_pb2.Group:
    traits = Struct()
    traits.update({"name": "Acme Inc", "employees": 120})
    group = profile_pb2.Group(id="acme", traits=traits, member_count=2)
    group.created_at.FromDatetime(CREATED)
    return group


class FakeIdentity:
    async def BatchGetIdentities(  # noqa: N802 - fakes carry the RPC names
        self, request: identity_pb2.BatchGetIdentitiesRequest
    ) -> identity_pb2.BatchGetIdentitiesResponse:
        return identity_pb2.BatchGetIdentitiesResponse(
            identities={
                i: identity_pb2.CustomerIdentities(customer_id=i) for i in request.customer_ids
            }
        )


class FakeProfile:
    """Answers BatchListCustomerGroups (c-1 and c-3 are in acme) and records each request."""

    def __init__(self, error: grpc.aio.AioRpcError | None = None) -> None:
        self.error = error
        self.requests: list[list[str]] = []
        self.pages: list[tuple[int, str]] = []

    async def BatchGetProfiles(  # noqa: N802
        self, request: profile_pb2.BatchGetProfilesRequest
    ) -> profile_pb2.BatchGetProfilesResponse:
        return profile_pb2.BatchGetProfilesResponse()

    async def BatchListCustomerGroups(  # noqa: N802
        self, request: profile_pb2.BatchListCustomerGroupsRequest
    ) -> profile_pb2.BatchListCustomerGroupsResponse:
        self.requests.append(list(request.customer_ids))
        self.pages.append((request.page_size, request.page_token))
        if self.error is not None:
            raise self.error
        return profile_pb2.BatchListCustomerGroupsResponse(
            customers={
                c: profile_pb2.CustomerGroups(
                    groups=[acme()], cursors=["after-acme"], next_page_token="after-acme"
                )
                if c in ("c-1", "c-3")
                else profile_pb2.CustomerGroups()
                for c in request.customer_ids
            }
        )


class FakeClients:
    def __init__(self, profile: FakeProfile) -> None:
        self.identity = FakeIdentity()
        self.profile = profile


async def graphql(profile: FakeProfile, query: str) -> dict[str, Any]:
    app = as_principal(
        LodestarGraphQL(cast(ServiceClients, FakeClients(profile)), SCHEMA, graphiql=False)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_one_call_serves_every_customer_of_a_query() -> None:
    profile = FakeProfile()
    body = await graphql(
        profile,
        """{
          a: customer(by: {id: "c-1"}) {
            groups(first: 1) {
              edges { cursor node { id traits memberCount createdAt updatedAt } }
              pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
            }
          }
          b: customer(by: {id: "c-2"}) { groups(first: 1) { edges { node { id } } } }
          c: customer(by: {id: "c-3"}) { groups(first: 1) { edges { node { id } } } }
        }""",
    )
    assert "errors" not in body, body
    assert profile.requests == [["c-1", "c-2", "c-3"]]
    assert profile.pages == [(1, "")]
    assert body["data"] == {
        "a": {
            "groups": {
                "edges": [
                    {
                        "cursor": "after-acme",
                        "node": {
                            "id": "acme",
                            "traits": {"name": "Acme Inc", "employees": 120},
                            "memberCount": 2,
                            "createdAt": "2024-05-01T09:30:00+00:00",
                            "updatedAt": None,
                        },
                    }
                ],
                "pageInfo": {
                    "hasNextPage": True,
                    "hasPreviousPage": False,
                    "startCursor": "after-acme",
                    "endCursor": "after-acme",
                },
            }
        },
        "b": {"groups": {"edges": []}},
        "c": {"groups": {"edges": [{"node": {"id": "acme"}}]}},
    }


async def test_the_next_page_is_asked_for_with_the_cursor_as_the_service_token() -> None:
    profile = FakeProfile()
    body = await graphql(
        profile,
        '{ customer(by: {id: "c-1"}) { groups(first: 5, after: "after-acme") '
        "{ pageInfo { hasPreviousPage } } } }",
    )
    assert "errors" not in body, body
    assert profile.pages == [(5, "after-acme")]
    assert body["data"]["customer"]["groups"]["pageInfo"] == {"hasPreviousPage": True}


async def test_first_is_bounded_before_calling_the_service() -> None:
    profile = FakeProfile()
    body = await graphql(
        profile, '{ customer(by: {id: "c-1"}) { groups(first: 101) { edges { cursor } } } }'
    )
    [problem] = body["errors"]
    assert problem["extensions"]["code"] == "BAD_USER_INPUT"
    assert "first must be between 1 and 100" in problem["message"]
    assert profile.requests == []


async def test_a_failing_profile_service_is_a_graphql_error_with_a_code() -> None:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
    )
    body = await graphql(
        FakeProfile(error), '{ customer(by: {id: "c-1"}) { id groups { edges { cursor } } } }'
    )
    [problem] = body["errors"]
    assert problem["path"] == ["customer", "groups"]
    # Only the field the profile service feeds is null; the customer stands.
    assert body["data"] == {"customer": {"id": "c-1", "groups": None}}
    assert problem["extensions"]["code"]
