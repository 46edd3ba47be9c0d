"""``customer { walletPasses }`` over HTTP, in process, against fake gRPC stubs: one
ListPasses per query, every field mapped, the pass's secret never exposed, and a failing
wallet service turned into a GraphQL error with a code on that field only."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.app import LodestarGraphQL
from gateway.clients import ServiceClients
from gateway.loaders import MAX_WALLET_CUSTOMERS, make_loaders
from gateway.schema import build_schema
from gateway.settings import GatewaySettings
from lodestar.v1 import identity_pb2, profile_pb2, wallet_pb2
from tests.support.keys import as_principal

TOKEN = "secret-token-of-the-pass-0123456789abcdefghij"
CREATED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
UPDATED = datetime(2024, 5, 2, 18, 0, tzinfo=UTC)
EVENT_AT = datetime(2024, 6, 1, 19, 0, tzinfo=UTC)
# Dev mode: one test reads the schema by introspection.
SCHEMA = build_schema(
    GatewaySettings(write_key="wk_test_12345").model_copy(update={"graphiql": True})
)


def stamp(at: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


def store_card(customer_id: str) -> wallet_pb2.WalletPass:
    """An Apple loyalty card as the wallet service answers it (secrets included)."""
    return wallet_pb2.WalletPass(
        serial_number=f"serial-{customer_id}",
        customer_id=customer_id,
        kind=wallet_pb2.PASS_KIND_STORE_CARD,
        platform=wallet_pb2.WALLET_PLATFORM_APPLE,
        pass_type_id="pass.com.example.lodestar",
        authentication_token=TOKEN,
        web_service_url="https://passes.example.com",
        template="default",
        created_at=stamp(CREATED),
        updated_at=stamp(UPDATED),
        fields={"tier": "Gold", "points": "120", "cashback_minor": "340"},
    )


def event_ticket(customer_id: str) -> wallet_pb2.WalletPass:
    """A voided Google event ticket that came from an offer."""
    return wallet_pb2.WalletPass(
        serial_number=f"ticket-{customer_id}",
        customer_id=customer_id,
        kind=wallet_pb2.PASS_KIND_EVENT_TICKET,
        platform=wallet_pb2.WALLET_PLATFORM_GOOGLE,
        pass_type_id="pass.com.example.lodestar",
        authentication_token=TOKEN,
        template="events",
        voided=True,
        created_at=stamp(CREATED),
        updated_at=stamp(UPDATED),
        save_link="https://pay.google.com/gp/v/save/eyJ",
        google_object_id="issuer.ticket-1",
        offer_id="spring-preview",
        fields={"venue": "Main Hall", "event": "Spring preview"},
        relevant_dates=[stamp(EVENT_AT)],
        locations=[
            wallet_pb2.PassLocation(latitude=40.4168, longitude=-3.7038, relevant_text="Hi!"),
            wallet_pb2.PassLocation(latitude=41.3874, longitude=2.1686),
        ],
    )


class FakeIdentity:
    """Every asked-for customer exists and was never merged."""

    async def BatchGetIdentities(  # noqa: N802 - fakes carry the RPC names
        self, request: identity_pb2.BatchGetIdentitiesRequest
    ) -> identity_pb2.BatchGetIdentitiesResponse:
        return identity_pb2.BatchGetIdentitiesResponse(
            identities={
                i: identity_pb2.CustomerIdentities(customer_id=i) for i in request.customer_ids
            }
        )


class FakeProfile:
    async def BatchGetProfiles(  # noqa: N802
        self, request: profile_pb2.BatchGetProfilesRequest
    ) -> profile_pb2.BatchGetProfilesResponse:
        return profile_pb2.BatchGetProfilesResponse()


class FakeWallet:
    """Answers ListPasses from ``passes`` and records each request; or fails with ``error``."""

    def __init__(
        self,
        passes: Mapping[str, list[wallet_pb2.WalletPass]] | None = None,
        error: grpc.aio.AioRpcError | None = None,
    ) -> None:
        self.passes = passes or {}
        self.error = error
        self.requests: list[list[str]] = []

    async def ListPasses(  # noqa: N802
        self, request: wallet_pb2.ListPassesRequest
    ) -> wallet_pb2.ListPassesResponse:
        self.requests.append(list(request.customer_ids))
        if self.error is not None:
            raise self.error
        return wallet_pb2.ListPassesResponse(
            customers=[
                wallet_pb2.CustomerPasses(customer_id=c, passes=self.passes.get(c, []))
                for c in request.customer_ids
            ]
        )


class FakeClients:
    def __init__(self, wallet: FakeWallet) -> None:
        self.identity = FakeIdentity()
        self.profile = FakeProfile()
        self.wallet = wallet


async def graphql(wallet: FakeWallet, query: str) -> dict[str, Any]:
    """POST ``query`` to the gateway's GraphQL app; the answer must be a 200."""
    app = as_principal(
        LodestarGraphQL(cast(ServiceClients, FakeClients(wallet)), SCHEMA, graphiql=False)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    assert TOKEN not in response.text
    body: dict[str, Any] = response.json()
    return body


ALL_FIELDS = """
  serialNumber kind platform template voided createdAt updatedAt saveLink offerId
  fields { key value } relevantDates locations { latitude longitude relevantText }
"""


async def test_one_list_passes_call_serves_every_customer_of_a_query() -> None:
    wallet = FakeWallet({"c-1": [store_card("c-1")], "c-3": [store_card("c-3")]})
    body = await graphql(
        wallet,
        """{
          a: customer(by: {id: "c-1"}) { walletPasses { serialNumber } }
          b: customer(by: {id: "c-2"}) { walletPasses { serialNumber } }
          c: customer(by: {id: "c-3"}) { walletPasses { serialNumber kind } }
          again: customer(by: {id: "c-1"}) { id walletPasses { platform } }
        }""",
    )
    assert "errors" not in body, body
    assert wallet.requests == [["c-1", "c-2", "c-3"]]
    assert body["data"] == {
        "a": {"walletPasses": [{"serialNumber": "serial-c-1"}]},
        "b": {"walletPasses": []},
        "c": {"walletPasses": [{"serialNumber": "serial-c-3", "kind": "STORE_CARD"}]},
        "again": {"id": "c-1", "walletPasses": [{"platform": "APPLE"}]},
    }


async def test_more_customers_than_the_service_takes_are_split_into_full_calls() -> None:
    wallet = FakeWallet()
    loaders = make_loaders(cast(ServiceClients, FakeClients(wallet)))
    ids = [f"c-{n}" for n in range(MAX_WALLET_CUSTOMERS + 1)]
    found = await loaders.wallet_passes.load_many(ids)
    assert found == [[] for _ in ids]
    assert wallet.requests == [ids[:MAX_WALLET_CUSTOMERS], ids[MAX_WALLET_CUSTOMERS:]]


async def test_every_field_of_a_pass_is_mapped() -> None:
    wallet = FakeWallet({"c-1": [store_card("c-1"), event_ticket("c-1")]})
    body = await graphql(
        wallet, f'{{ customer(by: {{id: "c-1"}}) {{ walletPasses {{ {ALL_FIELDS} }} }} }}'
    )
    assert "errors" not in body, body
    card, ticket = body["data"]["customer"]["walletPasses"]
    assert card == {
        "serialNumber": "serial-c-1",
        "kind": "STORE_CARD",
        "platform": "APPLE",
        "template": "default",
        "voided": False,
        "createdAt": "2024-05-01T09:30:00+00:00",
        "updatedAt": "2024-05-02T18:00:00+00:00",
        "saveLink": None,
        "offerId": None,
        "fields": [
            {"key": "cashback_minor", "value": "340"},
            {"key": "points", "value": "120"},
            {"key": "tier", "value": "Gold"},
        ],
        "relevantDates": [],
        "locations": [],
    }
    assert ticket == {
        "serialNumber": "ticket-c-1",
        "kind": "EVENT_TICKET",
        "platform": "GOOGLE",
        "template": "events",
        "voided": True,
        "createdAt": "2024-05-01T09:30:00+00:00",
        "updatedAt": "2024-05-02T18:00:00+00:00",
        "saveLink": "https://pay.google.com/gp/v/save/eyJ",
        "offerId": "spring-preview",
        "fields": [
            {"key": "event", "value": "Spring preview"},
            {"key": "venue", "value": "Main Hall"},
        ],
        "relevantDates": ["2024-06-01T19:00:00+00:00"],
        "locations": [
            {"latitude": 40.4168, "longitude": -3.7038, "relevantText": "Hi!"},
            {"latitude": 41.3874, "longitude": 2.1686, "relevantText": None},
        ],
    }


async def test_an_apple_pass_never_shows_a_save_link_and_unspecified_means_apple() -> None:
    odd = store_card("c-1")
    odd.platform = wallet_pb2.WALLET_PLATFORM_UNSPECIFIED
    odd.save_link = "https://pay.google.com/gp/v/save/not-for-apple"
    body = await graphql(
        FakeWallet({"c-1": [odd]}),
        '{ customer(by: {id: "c-1"}) { walletPasses { platform saveLink } } }',
    )
    assert body["data"]["customer"]["walletPasses"] == [{"platform": "APPLE", "saveLink": None}]


async def test_the_schema_has_no_field_for_the_pass_secrets() -> None:
    body = await graphql(
        FakeWallet(),
        '{ __type(name: "WalletPass") { fields { name } } }',
    )
    names = {f["name"] for f in body["data"]["__type"]["fields"]}
    assert names == {
        "serialNumber",
        "kind",
        "platform",
        "template",
        "voided",
        "createdAt",
        "updatedAt",
        "saveLink",
        "offerId",
        "fields",
        "relevantDates",
        "locations",
    }
    assert not any("token" in name.lower() for name in names)


UNAVAILABLE = "a backing service is unavailable; retry shortly"


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "UNAVAILABLE", UNAVAILABLE),
        (grpc.StatusCode.INTERNAL, "INTERNAL_SERVER_ERROR", "internal error"),
        (grpc.StatusCode.UNKNOWN, "INTERNAL_SERVER_ERROR", "internal error"),
    ],
)
async def test_a_failing_wallet_service_is_a_graphql_error_with_a_code(
    status: grpc.StatusCode, code: str, message: str
) -> None:
    error = grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(), "db down")
    body = await graphql(
        FakeWallet(error=error),
        '{ customer(by: {id: "c-1"}) { id walletPasses { serialNumber } } }',
    )
    # The rest of the customer is still there; only the passes are null.
    assert body["data"] == {"customer": {"id": "c-1", "walletPasses": None}}
    (only,) = body["errors"]
    assert only["extensions"] == {"code": code}
    assert only["path"] == ["customer", "walletPasses"]
    # What went wrong inside stays in the logs.
    assert only["message"] == message
