"""The gateway's read side against real gRPC servers in process (one per service, fake
servicers, real channels, a server interceptor counting every call):

- the batching invariant: ``customers(first: 100)`` asking every field of Customer makes at
  most one call per service per field kind;
- partial failure: with one service stopped (or slow) the rest of the customer comes back,
  only the fields it feeds are null, each with an ``UNAVAILABLE`` error;
- PII masked without ``read:pii``; every root field refused without its scope;
- Relay paging of a segment's customers across pages; ``segment``, ``item`` and
  ``walletPass`` (null when unknown).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.clients import ServiceClients
from gateway.loaders import make_loaders
from gateway.schema import build_schema
from gateway.scopes import ALL_SCOPES, MASKED, Principal, Scope
from gateway.settings import GatewaySettings
from lodestar.v1 import (
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

Context = grpc.aio.ServicerContext[Any, Any]
MEMBERS = [f"c-{n:03d}" for n in range(150)]
AT = datetime(2026, 3, 1, 9, tzinfo=UTC)


def stamp() -> Timestamp:
    value = Timestamp()
    value.FromDatetime(AT)
    return value


def struct(**values: Any) -> Struct:
    found = Struct()
    found.update(values)
    return found


def email_of(customer: str) -> str:
    return f"{customer}@example.com"


class Identity(identity_pb2_grpc.IdentityServiceServicer):
    async def BatchGetIdentities(  # noqa: N802 - servicers carry the RPC names
        self, request: identity_pb2.BatchGetIdentitiesRequest, context: Context
    ) -> identity_pb2.BatchGetIdentitiesResponse:
        return identity_pb2.BatchGetIdentitiesResponse(
            identities={
                c: identity_pb2.CustomerIdentities(
                    customer_id=c,
                    identifiers=[
                        common_pb2.Identifier(type="user_id", value=f"u-{c}"),
                        common_pb2.Identifier(type="email", value=email_of(c)),
                        common_pb2.Identifier(type="phone", value="+33612345678"),
                    ],
                )
                for c in request.customer_ids
                if c in MEMBERS
            }
        )

    async def BatchLookup(  # noqa: N802
        self, request: identity_pb2.BatchLookupRequest, context: Context
    ) -> identity_pb2.BatchLookupResponse:
        return identity_pb2.BatchLookupResponse(
            results=[
                identity_pb2.LookupResult(customer_id=i.value.removeprefix("u-"))
                for i in request.identifiers
            ]
        )


class Profile(profile_pb2_grpc.ProfileServiceServicer):
    async def BatchGetProfiles(  # noqa: N802
        self, request: profile_pb2.BatchGetProfilesRequest, context: Context
    ) -> profile_pb2.BatchGetProfilesResponse:
        money = common_pb2.Money(currency="EUR", amount_minor=4250)
        return profile_pb2.BatchGetProfilesResponse(
            profiles={
                c: profile_pb2.Profile(
                    customer_id=c,
                    traits=struct(email=email_of(c), firstName="Ada", plan="pro"),
                    event_counts={"Order Completed": 1},
                    first_seen=stamp(),
                    last_seen=stamp(),
                    orders=profile_pb2.OrdersSummary(
                        order_count=1, revenue=[money], average_order_value=money
                    ),
                    consent=[profile_pb2.ConsentState(purpose="analytics", state="granted")],
                    engagement=[profile_pb2.EngagementStat(kind="email_opened", count=2)],
                )
                for c in request.customer_ids
                if c in MEMBERS
            }
        )

    async def BatchListTimeline(  # noqa: N802
        self, request: profile_pb2.BatchListTimelineRequest, context: Context
    ) -> profile_pb2.BatchListTimelineResponse:
        responses = []
        for one in request.requests:
            if one.names:
                entry = profile_pb2.TimelineEntry(
                    event_id=f"o-{one.customer_id}",
                    type="track",
                    name="Order Completed",
                    at=stamp(),
                    properties=struct(
                        order_id="o-1", total=42.5, currency="eur", products=[{"sku": "boots"}]
                    ),
                    cursor="after-order",
                )
            else:
                entry = profile_pb2.TimelineEntry(
                    event_id=f"i-{one.customer_id}",
                    type="identify",
                    at=stamp(),
                    properties=struct(phone="+33612345678", page="/home"),
                    traits=struct(email=email_of(one.customer_id), plan="pro"),
                    cursor="after-identify",
                )
            responses.append(profile_pb2.ListTimelineResponse(entries=[entry]))
        return profile_pb2.BatchListTimelineResponse(responses=responses)

    async def BatchListCustomerGroups(  # noqa: N802
        self, request: profile_pb2.BatchListCustomerGroupsRequest, context: Context
    ) -> profile_pb2.BatchListCustomerGroupsResponse:
        acme = profile_pb2.Group(id="acme", traits=struct(name="Acme Inc", seats=5))
        return profile_pb2.BatchListCustomerGroupsResponse(
            customers={
                c: profile_pb2.CustomerGroups(groups=[acme], cursors=["after-acme"])
                for c in request.customer_ids
            }
        )


class Segmentation(segmentation_pb2_grpc.SegmentationServiceServicer):
    async def Members(  # noqa: N802
        self, request: segmentation_pb2.MembersRequest, context: Context
    ) -> segmentation_pb2.MembersResponse:
        if request.segment_id != "vip":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such segment")
        start = int(request.page_token.removeprefix("m:") or -1) + 1
        page = list(range(start, min(start + request.page_size, len(MEMBERS))))
        return segmentation_pb2.MembersResponse(
            members=[
                segmentation_pb2.Member(customer_id=MEMBERS[n], cursor=f"m:{n}") for n in page
            ],
            next_page_token=f"m:{page[-1]}" if page and page[-1] + 1 < len(MEMBERS) else "",
            total=len(MEMBERS),
        )

    async def GetSegment(  # noqa: N802
        self, request: segmentation_pb2.GetSegmentRequest, context: Context
    ) -> segmentation_pb2.Segment:
        if request.id != "vip":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such segment")
        return segmentation_pb2.Segment(id="vip", name="VIP", rule_json="{}", size=150)

    async def MembershipsFor(  # noqa: N802
        self, request: segmentation_pb2.MembershipsForRequest, context: Context
    ) -> segmentation_pb2.MembershipsForResponse:
        vip = segmentation_pb2.SegmentMembership(segment_id="vip", segment_name="VIP")
        return segmentation_pb2.MembershipsForResponse(
            memberships={
                c: segmentation_pb2.Memberships(segments=[vip]) for c in request.customer_ids
            }
        )

    async def GetScores(  # noqa: N802
        self, request: segmentation_pb2.GetScoresRequest, context: Context
    ) -> segmentation_pb2.GetScoresResponse:
        return segmentation_pb2.GetScoresResponse(
            scores={
                c: segmentation_pb2.CustomerScores(customer_id=c, rfm_cell="555")
                for c in request.customer_ids
            }
        )


class Recommendation(recommendation_pb2_grpc.RecommendationServiceServicer):
    boots = recommendation_pb2.RecommendedItem(item_id="boots", score=1.0, name="Boots")

    async def BatchRecommend(  # noqa: N802
        self, request: recommendation_pb2.BatchRecommendRequest, context: Context
    ) -> recommendation_pb2.BatchRecommendResponse:
        return recommendation_pb2.BatchRecommendResponse(
            responses=[
                recommendation_pb2.RecommendResponse(items=[self.boots]) for _ in request.requests
            ]
        )

    async def GetItems(  # noqa: N802
        self, request: recommendation_pb2.GetItemsRequest, context: Context
    ) -> recommendation_pb2.GetItemsResponse:
        known = {"boots": recommendation_pb2.CatalogItem(item_id="boots", name="Boots", price=89)}
        return recommendation_pb2.GetItemsResponse(
            items={i: known[i] for i in request.item_ids if i in known}
        )

    async def SimilarItems(  # noqa: N802
        self, request: recommendation_pb2.SimilarItemsRequest, context: Context
    ) -> recommendation_pb2.RecommendResponse:
        item = recommendation_pb2.RecommendedItem(item_id="sneakers", score=0.9)
        return recommendation_pb2.RecommendResponse(items=[item][: request.n])

    async def FrequentlyBoughtTogether(  # noqa: N802
        self, request: recommendation_pb2.FrequentlyBoughtTogetherRequest, context: Context
    ) -> recommendation_pb2.RecommendResponse:
        item = recommendation_pb2.RecommendedItem(item_id="socks", score=0.5)
        return recommendation_pb2.RecommendResponse(items=[item][: request.n])


class Wallet(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self) -> None:
        self.delay_s = 0.0

    def card(self, customer: str) -> wallet_pb2.WalletPass:
        return wallet_pb2.WalletPass(
            serial_number=f"card-{customer}",
            customer_id=customer,
            kind=wallet_pb2.PASS_KIND_STORE_CARD,
            authentication_token="secret-token-0123456789",
        )

    async def ListPasses(  # noqa: N802
        self, request: wallet_pb2.ListPassesRequest, context: Context
    ) -> wallet_pb2.ListPassesResponse:
        await asyncio.sleep(self.delay_s)
        return wallet_pb2.ListPassesResponse(
            customers=[
                wallet_pb2.CustomerPasses(customer_id=c, passes=[self.card(c)])
                for c in request.customer_ids
            ]
        )

    async def GetPass(  # noqa: N802
        self, request: wallet_pb2.GetPassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        if not request.serial_number.startswith("card-"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such pass")
        return self.card(request.serial_number.removeprefix("card-"))


class CountCalls(grpc.aio.ServerInterceptor):
    """Counts every call a server receives, by method name."""

    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        self.calls[handler_call_details.method.rsplit("/", 1)[-1]] += 1
        return await continuation(handler_call_details)


class Stack:
    """Five servers, one per service, and the gateway's clients of them."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.servers: dict[str, grpc.aio.Server] = {}
        self.wallet = Wallet()  # type: ignore[abstract]  # only the read RPCs are called
        self.clients: ServiceClients

    async def start(self) -> None:
        # Only the read RPCs are implemented, and only they are called.
        identity = Identity()  # type: ignore[abstract]
        profile = Profile()  # type: ignore[abstract]
        segmentation = Segmentation()  # type: ignore[abstract]
        recommendation = Recommendation()  # type: ignore[abstract]
        adders: dict[str, Callable[[grpc.aio.Server], None]] = {
            "identity": lambda s: identity_pb2_grpc.add_IdentityServiceServicer_to_server(
                identity, s
            ),
            "profile": lambda s: profile_pb2_grpc.add_ProfileServiceServicer_to_server(profile, s),
            "segmentation": lambda s: (
                segmentation_pb2_grpc.add_SegmentationServiceServicer_to_server(segmentation, s)
            ),
            "recommendation": lambda s: (
                recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(
                    recommendation, s
                )
            ),
            "wallet": lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(self.wallet, s),
        }
        port: dict[str, int] = {}
        for name, add in adders.items():
            server = grpc.aio.server(interceptors=[CountCalls(self.calls)])
            add(server)
            port[name] = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self.servers[name] = server
        settings = GatewaySettings(
            write_key="wk_test_12345",
            grpc_timeout_s=1,
            identity_addr=f"127.0.0.1:{port['identity']}",
            profile_addr=f"127.0.0.1:{port['profile']}",
            segmentation_addr=f"127.0.0.1:{port['segmentation']}",
            recommendation_addr=f"127.0.0.1:{port['recommendation']}",
            wallet_addr=f"127.0.0.1:{port['wallet']}",
        )
        self.clients = ServiceClients(settings)
        await self.clients.open()

    async def stop(self, name: str) -> None:
        await self.servers.pop(name).stop(0)

    async def close(self) -> None:
        await self.clients.close()
        for server in self.servers.values():
            await server.stop(0)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    found = Stack()
    await found.start()
    yield found
    await found.close()


SCHEMA = build_schema(GatewaySettings(write_key="wk_test_12345"))


async def run(
    stack: Stack,
    query: str,
    variables: dict[str, Any] | None = None,
    scopes: frozenset[Scope] = ALL_SCOPES,
) -> dict[str, Any]:
    result = await SCHEMA.execute(
        query,
        variable_values=variables,
        context_value={
            "clients": stack.clients,
            "loaders": make_loaders(stack.clients),
            "principal": Principal(key_id="k-1", name="test", scopes=scopes),
        },
    )
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [e.formatted for e in result.errors]
    return body


CUSTOMER_FIELDS = """
  id
  identifiers { type value }
  traits
  eventCounts { name count }
  orders { orderCount revenue { currency amount } averageOrderValue { amount } firstOrderAt
           lastOrderAt }
  loyalty { points pointsRedeemed cashbackBalance { amount } tier tierSince
            spendLast12Months { amount } purchasesLast12Months }
  consent { purpose state source at }
  consentHistory { purpose state }
  behaviour { devices cartOpen cartUpdatedAt channels sources lastPage lastPageAt lastScreen
              lastScreenAt sessionCount lastSessionStartedAt lastActiveAt }
  engagement { kind count lastAt }
  timeline(first: 5) {
    edges { cursor node { eventId type name at source properties traits } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
  orderHistory(first: 5) {
    edges { cursor node { eventId kind orderId total { currency amount } products at } }
    pageInfo { hasNextPage endCursor }
  }
  segments { segmentId segmentName since segmentVersion }
  scores { rfmCell pAlive clv12m }
  recommendations(n: 5) { strategy modelVersion items { itemId score name } }
  walletPasses { serialNumber kind platform }
  groups(first: 5) { edges { cursor node { id traits memberCount } } pageInfo { hasNextPage } }
  firstSeen
  lastSeen
"""


async def test_every_field_of_100_customers_takes_one_call_per_service_per_field_kind(
    stack: Stack,
) -> None:
    body = await run(
        stack,
        f"""{{ customers(segment: "vip", first: 100) {{
              totalCount pageInfo {{ hasNextPage endCursor }}
              edges {{ cursor node {{ {CUSTOMER_FIELDS} }} }} }} }}""",
    )
    assert "errors" not in body, body["errors"][:3]
    found = body["data"]["customers"]
    assert len(found["edges"]) == 100
    assert found["totalCount"] == 150
    assert found["pageInfo"] == {"hasNextPage": True, "endCursor": "m:99"}
    last = found["edges"][-1]["node"]
    assert last["id"] == "c-099"
    assert last["orderHistory"]["edges"][0]["node"]["total"] == {"currency": "EUR", "amount": 42.5}
    assert last["timeline"]["edges"][0]["node"]["eventId"] == "i-c-099"
    assert stack.calls == {
        "Members": 1,
        "BatchGetIdentities": 1,
        "BatchGetProfiles": 1,
        # The timeline and the order list ask together.
        "BatchListTimeline": 1,
        "BatchListCustomerGroups": 1,
        "MembershipsFor": 1,
        "GetScores": 1,
        "BatchRecommend": 1,
        "ListPasses": 1,
    }


async def test_customers_page_across_the_whole_segment_with_the_cursors(stack: Stack) -> None:
    query = """query($after: String) { customers(segment: "vip", first: 60, after: $after) {
        edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage endCursor } } }"""
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = (await run(stack, query, {"after": after}))["data"]["customers"]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        seen += [e["node"]["id"] for e in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 3
    assert seen == MEMBERS


# Which fields each service feeds in the customer view.
FED_BY = {
    "identity": {"identifiers"},
    "profile": {
        "traits",
        "eventCounts",
        "orders",
        "loyalty",
        "consent",
        "consentHistory",
        "behaviour",
        "engagement",
        "timeline",
        "orderHistory",
        "groups",
        "firstSeen",
        "lastSeen",
    },
    "segmentation": {"segments", "scores"},
    "recommendation": {"recommendations"},
    "wallet": {"walletPasses"},
}


@pytest.mark.parametrize("service", sorted(FED_BY))
async def test_one_service_stopped_nulls_only_the_fields_it_feeds(
    stack: Stack, service: str
) -> None:
    await stack.stop(service)
    body = await run(stack, f'{{ customer(by: {{id: "c-007"}}) {{ {CUSTOMER_FIELDS} }} }}')
    customer = body["data"]["customer"]
    assert customer is not None, body
    assert customer["id"] == "c-007"
    failed = FED_BY[service]
    errors = body["errors"]
    assert {e["path"][1] for e in errors} == failed
    for error in errors:
        assert error["path"][0] == "customer"
        assert error["extensions"] == {"code": "UNAVAILABLE"}
    for field, value in customer.items():
        if field in failed:
            assert value is None, field
        else:
            assert value is not None, f"{field} lost with {service} down"


async def test_a_slow_service_nulls_its_fields_as_unavailable(stack: Stack) -> None:
    stack.wallet.delay_s = 3  # past the 1 s gRPC deadline of the gateway's clients
    body = await run(stack, '{ customer(by: {id: "c-007"}) { id traits walletPasses { kind } } }')
    assert body["data"]["customer"]["walletPasses"] is None
    assert body["data"]["customer"]["traits"] is not None
    [error] = body["errors"]
    assert error["path"] == ["customer", "walletPasses"]
    assert error["extensions"] == {"code": "UNAVAILABLE"}


async def test_an_unknown_customer_is_null_while_identity_or_profile_answers(stack: Stack) -> None:
    await stack.stop("identity")
    body = await run(stack, '{ customer(by: {id: "nobody"}) { id } }')
    # The profile service does not know it and identity cannot tell: that is unavailable,
    # not "unknown".
    assert body["data"] == {"customer": None}
    assert body["errors"][0]["extensions"] == {"code": "UNAVAILABLE"}


PII_QUERY = """{ customer(by: {id: "c-001"}) {
  identifiers { type value }
  traits
  timeline(first: 1) { edges { node { properties traits } } }
  groups { edges { node { traits } } }
} }"""


async def test_pii_is_masked_without_read_pii(stack: Stack) -> None:
    body = await run(stack, PII_QUERY, scopes=frozenset({Scope.READ_CUSTOMERS}))
    assert "errors" not in body, body
    customer = body["data"]["customer"]
    assert customer["identifiers"] == [
        {"type": "user_id", "value": "u-c-001"},
        {"type": "email", "value": MASKED},
        {"type": "phone", "value": MASKED},
    ]
    assert customer["traits"] == {"email": MASKED, "firstName": MASKED, "plan": "pro"}
    [entry] = customer["timeline"]["edges"]
    assert entry["node"] == {
        "properties": {"phone": MASKED, "page": "/home"},
        "traits": {"email": MASKED, "plan": "pro"},
    }
    [group] = customer["groups"]["edges"]
    assert group["node"]["traits"] == {"name": MASKED, "seats": 5}
    assert "c-001@example.com" not in str(body)
    assert "+33612345678" not in str(body)


async def test_pii_is_shown_with_read_pii(stack: Stack) -> None:
    body = await run(stack, PII_QUERY, scopes=frozenset({Scope.READ_CUSTOMERS, Scope.READ_PII}))
    customer = body["data"]["customer"]
    assert {"type": "email", "value": "c-001@example.com"} in customer["identifiers"]
    assert customer["traits"] == {"email": "c-001@example.com", "firstName": "Ada", "plan": "pro"}
    [entry] = customer["timeline"]["edges"]
    assert entry["node"]["properties"] == {"phone": "+33612345678", "page": "/home"}
    assert customer["groups"]["edges"][0]["node"]["traits"] == {"name": "Acme Inc", "seats": 5}


ROOT_FIELDS = {
    "customer": ('{ customer(by: {id: "c-001"}) { id } }', Scope.READ_CUSTOMERS),
    "customers": ('{ customers(segment: "vip") { totalCount } }', Scope.READ_CUSTOMERS),
    "segment": ('{ segment(id: "vip") { id } }', Scope.READ_CUSTOMERS),
    "segments": ("{ segments { id } }", Scope.READ_CUSTOMERS),
    "item": ('{ item(id: "boots") { id } }', Scope.READ_CUSTOMERS),
    "walletPass": ('{ walletPass(serialNumber: "card-c-001") { kind } }', Scope.READ_CUSTOMERS),
    "privacyRequest": ('{ privacyRequest(id: "r-1") { id } }', Scope.PRIVACY),
}


@pytest.mark.parametrize("field", sorted(ROOT_FIELDS))
async def test_each_root_field_is_refused_without_its_scope(stack: Stack, field: str) -> None:
    query, scope = ROOT_FIELDS[field]
    body = await run(stack, query, scopes=ALL_SCOPES - {scope})
    assert body["data"] is None or body["data"][field] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN", "scope": scope.value}
    assert scope.value in error["message"]
    assert sum(stack.calls.values()) == 0


async def test_segment_item_and_wallet_pass_or_null_when_unknown(stack: Stack) -> None:
    body = await run(
        stack,
        """{
          segment(id: "vip") { id name size }
          noSegment: segment(id: "nope") { id }
          item(id: "boots") { id name price similarItems(n: 3) { itemId }
                              frequentlyBoughtTogether(n: 3) { itemId } }
          noItem: item(id: "nope") { id }
          walletPass(serialNumber: "card-c-001") { serialNumber kind }
          noPass: walletPass(serialNumber: "nope") { kind }
          noCustomers: customers(segment: "nope") { totalCount }
        }""",
    )
    assert "errors" not in body, body
    assert body["data"] == {
        "segment": {"id": "vip", "name": "VIP", "size": 150},
        "noSegment": None,
        "item": {
            "id": "boots",
            "name": "Boots",
            "price": 89.0,
            "similarItems": [{"itemId": "sneakers"}],
            "frequentlyBoughtTogether": [{"itemId": "socks"}],
        },
        "noItem": None,
        "walletPass": {"serialNumber": "card-c-001", "kind": "STORE_CARD"},
        "noPass": None,
        "noCustomers": None,
    }
    # Both items in one GetItems.
    assert stack.calls["GetItems"] == 1


@pytest.mark.parametrize(
    ("field", "most"), [("timeline", 200), ("orderHistory", 200), ("groups", 100)]
)
async def test_connection_first_is_bounded_with_a_clear_error(
    stack: Stack, field: str, most: int
) -> None:
    page = f"{field}(first: {most + 1}) {{ pageInfo {{ hasNextPage }} }}"
    body = await run(stack, f'{{ customer(by: {{id: "c-001"}}) {{ id {page} }} }}')
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert error["message"] == f"first must be between 1 and {most}"
    assert body["data"]["customer"] == {"id": "c-001", field: None}
