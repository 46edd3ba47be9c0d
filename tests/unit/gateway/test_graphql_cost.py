"""The query cost limit: what an operation costs (fields, lists multiplied by ``first``/``n``
or a default, fan-out fields), with its variables, and the refusal of one over the budget
before any resolver runs.

Costs are checked on a small schema with the shapes of the 360-degree view (Relay
connections, ``customers(segment:, first:)``, ``item { similarItems }``, a union) and on the
gateway's own schema: its full view (every field of ``Customer``) must fit the default budget
for a page of 100 customers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLObjectType,
    GraphQLSchema,
    SelectionSetNode,
    get_named_type,
    parse,
    validate,
)
from graphql import build_schema as schema_from_sdl

import gateway.cost
from gateway.clients import ServiceClients
from gateway.cost import (
    DEFAULT_LIST_SIZE,
    FAN_OUT,
    QUERY_TOO_COSTLY,
    CostCache,
    operation_cost,
)
from gateway.loaders import make_loaders
from gateway.schema import build_schema
from gateway.scopes import ALL_SCOPES, Principal
from gateway.settings import GatewaySettings
from lodestar.v1 import identity_pb2, profile_pb2, recommendation_pb2
from tests.support.keys import SHARED_BEARER, keyed_app

SETTINGS = GatewaySettings(write_key="wk_test_12345")
BUDGET = SETTINGS.graphql_max_cost

# A small schema with the shapes of the 360-degree view (connections, the audience list,
# items, a union): the cost rules one by one.
NEXT_SDL = """
scalar JSON
scalar DateTime
input IdentifierInput { type: String! value: String! }
input CustomerLookup @oneOf { id: ID identifier: IdentifierInput }
type PageInfo { hasNextPage: Boolean! endCursor: String }
type Identifier { type: String! value: String! }
type EventCount { name: String! count: Int! }
type Money { currency: String! amount: Float! }
type Consent { purpose: String! state: String! source: String! at: DateTime }
type TimelineEntry { eventId: String! type: String! name: String! at: DateTime
                     source: String! properties: JSON! traits: JSON! }
type TimelineEdge { cursor: String! node: TimelineEntry! }
type TimelineConnection { edges: [TimelineEdge!]! pageInfo: PageInfo! }
type Order { orderId: String! total: Money! at: DateTime refunded: Boolean! }
type OrderEdge { cursor: String! node: Order! }
type OrderConnection { totalCount: Int! edges: [OrderEdge!]! pageInfo: PageInfo! }
type Group { id: ID! traits: JSON! memberCount: Int! }
type GroupEdge { cursor: String! node: Group! }
type GroupConnection { edges: [GroupEdge!]! pageInfo: PageInfo! }
type SegmentMembership { segmentId: ID! segmentName: String! since: DateTime }
type CustomerScores { rfmCell: String! pAlive: Float clv12m: Float }
type RecommendedItem { itemId: ID! score: Float! name: String price: Float }
type Recommendations { strategy: String! items: [RecommendedItem!]! }
type WalletPassField { key: String! value: String! }
type WalletPass { serialNumber: String! voided: Boolean! fields: [WalletPassField!]! }
type Item {
  id: ID! name: String
  similarItems(n: Int! = 10): [RecommendedItem!]!
  frequentlyBoughtTogether(n: Int! = 10): [RecommendedItem!]!
}
type Customer {
  id: ID!
  identifiers: [Identifier!]
  traits: JSON
  eventCounts: [EventCount!]
  consent: [Consent!]
  timeline(first: Int! = 20, after: String): TimelineConnection
  orders(first: Int! = 20, after: String): OrderConnection
  groups(first: Int! = 20, after: String): GroupConnection
  segments: [SegmentMembership!]
  scores: CustomerScores
  recommendations(n: Int! = 10): Recommendations
  walletPasses: [WalletPass!]
  referredBy: Customer
}
type CustomerEdge { cursor: String! node: Customer! }
type CustomerConnection { totalCount: Int! edges: [CustomerEdge!]! pageInfo: PageInfo! }
union Found = Customer | Item
type Query {
  customer(by: CustomerLookup!): Customer
  customers(segment: ID!, first: Int! = 20, after: String): CustomerConnection!
  item(id: ID!): Item
  find(text: String!): [Found!]!
}
"""
NEXT = schema_from_sdl(NEXT_SDL)


def cost(query: str, variables: dict[str, Any] | None = None, schema: GraphQLSchema = NEXT) -> int:
    found = operation_cost(schema, parse(query), variables)
    assert found is not None
    return found


def test_the_default_budget_is_the_setting() -> None:
    assert SETTINGS.graphql_max_cost == 150_000
    assert GatewaySettings(write_key="wk_test_12345", graphql_max_cost=500).graphql_max_cost == 500


def test_fields_cost_one_and_introspection_nothing() -> None:
    assert cost('{ customer(by: {id: "c"}) { id traits } }') == 3
    assert cost('{ __typename customer(by: {id: "c"}) { __typename id } }') == 2
    assert cost("{ __schema { types { name fields { name } } } }") == 0


def test_first_multiplies_a_connections_edges_not_its_page_info() -> None:
    # customers: 1 + fan-out; totalCount 1; edges 1 + 3 x (cursor 1 + node 1 + id 1);
    # pageInfo 1 + 1.
    query = (
        '{ customers(segment: "s", first: 3) { totalCount edges { cursor node { id } } '
        "pageInfo { endCursor } } }"
    )
    assert cost(query) == 1 + FAN_OUT["customers"] + 1 + (1 + 3 * 3) + 2


def test_n_multiplies_a_list_field_and_the_list_under_an_object() -> None:
    similar = FAN_OUT["similarItems"]
    assert cost('{ item(id: "i") { similarItems(n: 4) { itemId } } }') == 1 + 1 + similar + 4
    recommendations = (
        '{ customer(by: {id: "c"}) { recommendations(n: 7) { strategy items { name } } } }'
    )
    assert cost(recommendations) == 1 + 1 + FAN_OUT["recommendations"] + 1 + (1 + 7)


def test_lists_without_a_size_count_the_default_and_nest() -> None:
    query = '{ customer(by: {id: "c"}) { walletPasses { serialNumber fields { key value } } } }'
    per_pass = 1 + (1 + DEFAULT_LIST_SIZE * 2)
    assert cost(query) == 1 + 1 + FAN_OUT["walletPasses"] + DEFAULT_LIST_SIZE * per_pass


def test_the_size_comes_from_variables_then_their_defaults_then_the_schema() -> None:
    query = 'query($n: Int! = 6) { item(id: "i") { similarItems(n: $n) { itemId } } }'
    base = 1 + 1 + FAN_OUT["similarItems"]
    assert cost(query, {"n": 50}) == base + 50
    assert cost(query) == base + 6
    assert cost('{ item(id: "i") { similarItems { itemId } } }') == base + 10


@pytest.mark.parametrize("value", ["50", True, 2.5, [50], {"n": 50}, None])
def test_a_size_that_is_not_an_integer_counts_the_default(value: object) -> None:
    query = 'query($n: Int!) { item(id: "i") { similarItems(n: $n) { itemId } } }'
    assert cost(query, {"n": value}) == 1 + 1 + FAN_OUT["similarItems"] + DEFAULT_LIST_SIZE


def test_an_integral_float_counts_as_graphql_reads_it_and_a_negative_as_nothing() -> None:
    query = 'query($n: Int!) { item(id: "i") { similarItems(n: $n) { itemId } } }'
    base = 1 + 1 + FAN_OUT["similarItems"]
    assert cost(query, {"n": 1e9}) == base + 1_000_000_000
    assert cost(query, {"n": -5}) == base


@pytest.mark.parametrize(
    "value",
    [2**31, -(2**31) - 1, 10**5000, 1e300, float("inf")],
    ids=["2**31", "-2**31-1", "10**5000", "1e300", "inf"],
)
def test_a_size_beyond_a_graphql_int_counts_the_default(value: object) -> None:
    query = 'query($n: Int!) { item(id: "i") { similarItems(n: $n) { itemId } } }'
    assert cost(query, {"n": value}) == 1 + 1 + FAN_OUT["similarItems"] + DEFAULT_LIST_SIZE


def test_huge_sizes_multiply_without_bound() -> None:
    query = (
        '{ customers(segment: "s", first: 2147483647) { edges { node { '
        "timeline(first: 2147483647) { edges { node { name } } } } } } }"
    )
    assert cost(query) > 2147483647**2


def test_fragments_and_inline_fragments_cost_what_the_fields_cost() -> None:
    plain = '{ customer(by: {id: "c"}) { id scores { rfmCell } } }'
    named = '{ customer(by: {id: "c"}) { ...F } } fragment F on Customer { id scores { rfmCell } }'
    inline = '{ customer(by: {id: "c"}) { ... on Customer { id } ... { scores { rfmCell } } } }'
    assert cost(plain) == cost(named) == cost(inline) == 1 + 1 + 1 + FAN_OUT["scores"] + 1


def test_a_fragment_spread_under_a_list_is_multiplied() -> None:
    query = (
        'query { customers(segment: "s", first: 40) { edges { node { ...Ids } } } } '
        "fragment Ids on Customer { identifiers { value } }"
    )
    per_customer = 1 + (1 + DEFAULT_LIST_SIZE)
    assert cost(query) == 1 + FAN_OUT["customers"] + 1 + 40 * per_customer


def test_every_branch_of_a_union_counts() -> None:
    query = '{ find(text: "x") { ... on Customer { id } ... on Item { id name } } }'
    assert cost(query) == 1 + DEFAULT_LIST_SIZE * 3


def test_fragments_spread_many_times_are_costed_in_linear_time() -> None:
    # Each fragment spreads the next under two fields: 2**30 paths through 31 fragments
    # (deeper than the depth limit allows, to show the walk does not follow every path).
    depth = 30
    chain = " ".join(
        f"fragment F{i} on Customer {{ id a: referredBy {{ ...F{i + 1} }} "
        f"b: referredBy {{ ...F{i + 1} }} }}"
        for i in range(depth)
    )
    last = f"fragment F{depth} on Customer {{ id }}"
    query = f'{{ customer(by: {{id: "c"}}) {{ ...F0 }} }} {chain} {last}'
    expected = 1
    for _ in range(depth):
        expected = 1 + 2 * (1 + expected)
    assert cost(query) == 1 + expected
    assert expected > 2**30


def test_a_fragment_spread_twice_in_one_selection_counts_once() -> None:
    # Execution merges the two spreads into one set of fields.
    once = '{ customer(by: {id: "c"}) { ...F } } fragment F on Customer { id scores { rfmCell } }'
    twice = once.replace("...F }", "...F ...F }")
    assert cost(twice) == cost(once)


def test_a_fragment_cycle_does_not_loop() -> None:
    # Validation refuses cycles before costing; the walk still ends on one.
    query = (
        '{ customer(by: {id: "c"}) { ...A } } '
        "fragment A on Customer { id ...B } fragment B on Customer { traits ...A }"
    )
    assert cost(query) == 1 + 2


def test_the_operation_named_is_costed() -> None:
    query = (
        'query Small { item(id: "i") { id } } '
        'query Big { customers(segment: "s", first: 100) { edges { node { id } } } }'
    )
    document = parse(query)
    assert operation_cost(NEXT, document, None, "Small") == 2
    assert operation_cost(NEXT, document, None, "Big") == 1 + FAN_OUT["customers"] + 1 + 200
    assert operation_cost(NEXT, document, None, None) is None


def test_the_cache_costs_a_document_once_per_count_of_its_size_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walks: list[object] = []
    walk = gateway.cost._walk

    def counted(*args: Any) -> Any:
        walks.append(args)
        return walk(*args)

    monkeypatch.setattr(gateway.cost, "_walk", counted)
    query = "query($n: Int = 6, $id: ID) { item(id: $id) { similarItems(n: $n) { itemId } } }"
    document = parse(query)
    cache = CostCache(4)
    base = 1 + 1 + FAN_OUT["similarItems"]

    def cached(variables: dict[str, Any]) -> int | None:
        return cache.cost(NEXT, query, document, variables, None)

    assert cached({"n": 5, "id": "a"}) == base + 5
    assert cached({"n": 5, "id": "b"}) == base + 5
    assert len(walks) == 1
    assert cached({"n": 500}) == base + 500
    assert cached({}) == base + 6
    assert cached({"n": None}) == base + DEFAULT_LIST_SIZE
    assert cached({"n": 5.0}) == base + 5
    # null counts as the default (5) and 5.0 as 5: the same cost as 5, from the cache.
    assert DEFAULT_LIST_SIZE == 5
    assert len(walks) == 3
    assert cached({"n": 500}) == base + 500
    assert cached({"n": 6}) == base + 6
    assert len(walks) == 4


def test_the_cache_is_bounded() -> None:
    cache = CostCache(2)
    for n in range(5):
        query = f'{{ item(id: "i{n}") {{ id }} }}'
        assert cache.cost(NEXT, query, parse(query), {}, None) == 2
    assert len(cache.known) == 2
    query = 'query($n: Int) { item(id: "i") { similarItems(n: $n) { itemId } } }'
    document = parse(query)
    for n in range(100):
        cache.cost(NEXT, query, document, {"n": n}, None)
    assert all(len(k.costs) <= gateway.cost.MAX_COUNTS_PER_DOCUMENT for k in cache.known.values())


# --- The gateway's schema -------------------------------------------------------------------

SCHEMA = build_schema(SETTINGS)._schema

# Every field of Customer, with pages of 20 (what the benchmark builds by introspection).
FULL_VIEW = """
fragment FullView on Customer {
  id identifiers { type value } traits eventCounts { name count }
  orders { orderCount revenue { currency amount } averageOrderValue { currency amount }
           firstOrderAt lastOrderAt }
  loyalty { points pointsRedeemed cashbackBalance { currency amount } tier tierSince
            spendLast12Months { currency amount } purchasesLast12Months }
  consent { purpose state source at } consentHistory { purpose state source at }
  behaviour { devices cartOpen cartUpdatedAt channels sources lastPage lastPageAt lastScreen
              lastScreenAt sessionCount lastSessionStartedAt lastActiveAt }
  engagement { kind count lastAt }
  timeline(first: $timeline) {
    edges { cursor node { eventId type name at source properties traits } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
  orderHistory(first: 20) {
    edges { cursor node { eventId kind orderId total { currency amount } products at } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
  segments { segmentId segmentName since segmentVersion }
  scores { recencyDays frequency monetary rScore fScore mScore rfmCell pAlive
           expectedPurchases30d expectedPurchases90d clv12m modelVersion computedAt }
  recommendations(n: 10) { strategy modelVersion
                           items { itemId score name category price imageUrl } }
  walletPasses { serialNumber kind platform template voided createdAt updatedAt saveLink
                 offerId fields { key value } relevantDates
                 locations { latitude longitude relevantText } }
  groups(first: 20) {
    edges { cursor node { id traits memberCount createdAt updatedAt } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
  firstSeen lastSeen
}
"""
ONE = (
    "query One($id: ID!, $timeline: Int! = 20) { customer(by: {id: $id}) { ...FullView } }"
    + FULL_VIEW
)
AUDIENCE = (
    "query Audience($segment: ID!, $first: Int!, $timeline: Int! = 20) {"
    " customers(segment: $segment, first: $first) { totalCount"
    " edges { cursor node { ...FullView } }"
    " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }" + FULL_VIEW
)
RECOMMENDED = """
query Recommended($n: Int!) { customer(by: {id: "c-1"}) {
  recommendations(n: $n) { items { itemId score name category price imageUrl } } } }
"""


def unselected(schema: GraphQLSchema, query: str, fragment: str) -> list[str]:
    """The fields (``Type.field``) of the objects a fragment reaches that it does not select."""
    document = parse(query)
    found = next(
        d
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode) and d.name.value == fragment
    )
    missing: list[str] = []

    def walk(node: SelectionSetNode, parent: GraphQLObjectType) -> None:
        fields = {f.name.value: f for f in node.selections if isinstance(f, FieldNode)}
        missing.extend(f"{parent.name}.{n}" for n in parent.fields if n not in fields)
        for name, child in fields.items():
            named = get_named_type(parent.fields[name].type)
            if isinstance(named, GraphQLObjectType) and child.selection_set is not None:
                walk(child.selection_set, named)

    on = schema.get_type(found.type_condition.name.value)
    assert isinstance(on, GraphQLObjectType)
    walk(found.selection_set, on)
    return missing


def test_the_full_view_is_valid_and_asks_every_field() -> None:
    assert validate(SCHEMA, parse(ONE)) == []
    assert validate(SCHEMA, parse(AUDIENCE)) == []
    assert unselected(SCHEMA, ONE, "FullView") == []


def test_the_full_view_fits_the_budget_fifty_and_a_hundred_times() -> None:
    one = cost(ONE, {"id": "c"}, SCHEMA)
    # Measured: 1,024 a customer with pages of 20 (1,744 with 100 timeline entries).
    assert one * 50 < one * 100 < BUDGET
    fifty = cost(AUDIENCE, {"segment": "s", "first": 50}, SCHEMA)
    hundred = cost(AUDIENCE, {"segment": "s", "first": 100}, SCHEMA)
    assert fifty < hundred <= BUDGET
    # The page itself costs a few: 100 customers cost about 100 times one.
    assert 100 * one < hundred < 100 * one + 200


def test_a_hundred_full_views_with_a_hundred_timeline_entries_each_do_not_fit() -> None:
    variables = {"segment": "s", "first": 100, "timeline": 100}
    assert cost(AUDIENCE, variables, SCHEMA) > BUDGET


def fake_clients() -> tuple[ServiceClients, list[str]]:
    """Clients that know one customer with no recommendations, recording each call."""
    calls: list[str] = []

    async def batch_get_identities(
        request: identity_pb2.BatchGetIdentitiesRequest,
    ) -> identity_pb2.BatchGetIdentitiesResponse:
        calls.append("BatchGetIdentities")
        return identity_pb2.BatchGetIdentitiesResponse(
            identities={
                i: identity_pb2.CustomerIdentities(customer_id=i) for i in request.customer_ids
            }
        )

    async def batch_get_profiles(
        request: profile_pb2.BatchGetProfilesRequest,
    ) -> profile_pb2.BatchGetProfilesResponse:
        calls.append("BatchGetProfiles")
        return profile_pb2.BatchGetProfilesResponse(
            profiles={i: profile_pb2.Profile(customer_id=i) for i in request.customer_ids}
        )

    async def batch_recommend(
        request: recommendation_pb2.BatchRecommendRequest,
    ) -> recommendation_pb2.BatchRecommendResponse:
        calls.append("BatchRecommend")
        return recommendation_pb2.BatchRecommendResponse(
            responses=[recommendation_pb2.RecommendResponse() for _ in request.requests]
        )

    clients = SimpleNamespace(
        identity=SimpleNamespace(BatchGetIdentities=batch_get_identities),
        profile=SimpleNamespace(BatchGetProfiles=batch_get_profiles),
        recommendation=SimpleNamespace(BatchRecommend=batch_recommend),
    )
    return cast(ServiceClients, clients), calls


async def run(query: str, variables: dict[str, Any], settings: GatewaySettings = SETTINGS) -> Any:
    clients, calls = fake_clients()
    result = await build_schema(settings).execute(
        query,
        variable_values=variables,
        context_value={
            "clients": clients,
            "loaders": make_loaders(clients),
            "principal": Principal("k-1", "test", ALL_SCOPES),
        },
    )
    return result, calls


async def test_an_operation_within_the_budget_runs() -> None:
    result, calls = await run(RECOMMENDED, {"n": 5})
    assert result.errors is None
    assert result.data == {"customer": {"recommendations": {"items": []}}}
    assert "BatchRecommend" in calls


async def test_an_operation_over_the_budget_is_refused_before_any_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    result, calls = await run(RECOMMENDED, {"n": 1_000_000})
    assert calls == []
    assert result.data is None
    [error] = result.errors
    expected = 1 + 1 + FAN_OUT["recommendations"] + 1 + 1_000_000 * 6
    assert error.extensions == {"code": QUERY_TOO_COSTLY, "cost": expected, "budget": BUDGET}
    assert f"costs {expected}" in error.message
    assert f"budget of {BUDGET}" in error.message
    # A client error: logged at INFO, never as a fault.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_timeline_of_the_largest_int_is_refused_before_any_call() -> None:
    query = (
        'query($first: Int!) { customer(by: {id: "c-1"}) { timeline(first: $first) '
        "{ edges { node { name } } } } }"
    )
    result, calls = await run(query, {"first": 2**31 - 1})
    assert calls == []
    [error] = result.errors
    assert error.extensions["code"] == QUERY_TOO_COSTLY


async def test_a_size_of_four_thousand_digits_is_a_bad_variable_not_a_crash() -> None:
    # Multiplied by itself, such a count would be too long to print as a number.
    query = (
        'query($first: Int!, $n: Int!) { customer(by: {id: "c-1"}) { '
        "timeline(first: $first) { edges { node { name } } } "
        "recommendations(n: $n) { items { itemId } } } }"
    )
    result, calls = await run(query, {"first": 10**4000, "n": 10**4000})
    assert calls == []
    assert {e.extensions["code"] for e in result.errors} == {"BAD_USER_INPUT"}
    assert all(len(e.message) <= 300 for e in result.errors)


async def test_the_budget_follows_the_setting() -> None:
    strict = SETTINGS.model_copy(update={"graphql_max_cost": 100})
    result, calls = await run(RECOMMENDED, {"n": 20}, strict)
    assert calls == []
    [error] = result.errors
    assert error.extensions["code"] == QUERY_TOO_COSTLY
    assert error.extensions["budget"] == 100


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_over_budget_over_http_names_cost_and_budget(client: httpx.AsyncClient) -> None:
    body = {"query": RECOMMENDED, "variables": {"n": 2_000_000}}
    response = await client.post("/graphql", json=body, headers=SHARED_BEARER)
    assert response.status_code in (200, 400), response.text
    payload = response.json()
    assert payload.get("data") is None
    [error] = payload["errors"]
    assert error["extensions"]["code"] == QUERY_TOO_COSTLY
    assert error["extensions"]["budget"] == BUDGET
    assert error["extensions"]["cost"] > BUDGET


@pytest.mark.parametrize("value", ["many", True, 2.5, [3]])
async def test_a_size_variable_that_is_not_an_int_is_a_bad_variable(
    client: httpx.AsyncClient, value: object
) -> None:
    body = {"query": RECOMMENDED, "variables": {"n": value}}
    response = await client.post("/graphql", json=body, headers=SHARED_BEARER)
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "$n" in error["message"]


async def test_a_fragment_cycle_is_refused_by_validation(client: httpx.AsyncClient) -> None:
    query = (
        '{ customer(by: {id: "c"}) { ...A } } '
        "fragment A on Customer { id ...B } fragment B on Customer { traits ...A }"
    )
    response = await client.post("/graphql", json={"query": query}, headers=SHARED_BEARER)
    errors = response.json()["errors"]
    assert {e["extensions"]["code"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    assert any("Cannot spread fragment" in e["message"] for e in errors)
