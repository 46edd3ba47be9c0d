"""Property-based hostile input against the GraphQL endpoint of the running platform, over
POST and GET, with the API key (the doors without it are checked in test_probe_cases).

Oracle: never a 5xx; every error carries an ``extensions.code`` and none is an internal
error; afterwards no process died, no log holds a traceback or an ERROR, and the sentinel
customer is unchanged.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.local.stack import Stack
from tests.security.hostile import FUZZ, ODD_NUMBERS, dumps, json_values, nested_text, strings
from tests.security.oracle import Baseline, graphql_problem
from tests.security.sentinel import Sentinel

pytestmark = pytest.mark.e2e

CUSTOMER_FIELDS = [
    "id",
    "identifiers { type value }",
    "traits",
    "eventCounts { name count }",
    "orders { orderCount }",
    "loyalty { points tier }",
    "consent { purpose state }",
    "behaviour { channels }",
    "engagement { kind count }",
    "segments { segmentId }",
    "scores { rfmCell pAlive }",
    "walletPasses { serialNumber }",
    "firstSeen",
    "lastSeen",
]


def literal(value: Any) -> str:
    """A GraphQL literal for ``value``, however odd (strings keep their escapes)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


@st.composite
def selections(draw: st.DrawFn) -> str:
    """Some customer fields, with hostile arguments where a field takes them."""
    chosen = draw(st.lists(st.sampled_from(CUSTOMER_FIELDS), min_size=1, max_size=5))
    if draw(st.booleans()):
        first = draw(st.sampled_from(ODD_NUMBERS) | st.integers() | strings)
        after = draw(strings)
        chosen.append(
            f"timeline(first: {literal(first)}, after: {literal(after)}) "
            "{ edges { node { name } } }"
        )
    if draw(st.booleans()):
        n = draw(st.sampled_from(ODD_NUMBERS) | st.integers())
        chosen.append(f"recommendations(n: {literal(n)}) {{ items {{ itemId }} }}")
    return " ".join(chosen)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A query document and its variables; parts may be hostile in any way."""
    kind = draw(
        st.sampled_from(["by-id", "by-identifier", "variables", "aliases", "deep", "junk", "other"])
    )
    fields = draw(selections())
    if kind == "by-id":
        return f"{{ customer(by: {{id: {literal(draw(strings))}}}) {{ {fields} }} }}", {}
    if kind == "by-identifier":
        type_, value = draw(strings), draw(strings)
        given = f"{{type: {literal(type_)}, value: {literal(value)}}}"
        return f"{{ customer(by: {{identifier: {given}}}) {{ {fields} }} }}", {}
    if kind == "variables":
        query = (
            "query Q($id: ID, $i: IdentifierInput) "
            f"{{ customer(by: {{id: $id, identifier: $i}}) {{ {fields} }} }}"
        )
        return query, {"id": draw(json_values), "i": draw(json_values)}
    if kind == "aliases":
        count = draw(st.sampled_from([2, 31, 200, 1000]))
        return "{ " + " ".join(f"a{i}: segments {{ id }}" for i in range(count)) + " }", {}
    if kind == "deep":
        depth = draw(st.sampled_from([20, 100, 1000]))
        return '{ customer(by: {id: "x"}) ' + "{ id " * depth + "}" * depth + " }", {}
    if kind == "junk":
        return draw(strings | st.text(max_size=200)), {}
    query = draw(
        st.sampled_from(
            [
                "{ __schema { types { name fields { name } } } }",
                "{ privacyRequest(id: " + literal(draw(strings)) + ") { id } }",
                "fragment A on Query { ...A } { ...A }",
                'query { customer(by: {id: "1"}) { id } } query { segments { id } }',
                "subscription { nothing }",
                "{ customer { id } }",
                "{ " + nested_text(300, "[", "]", "1") + " }",
            ]
        )
    )
    return query, {}


# httpx refuses to build a URL longer than 65,536 characters.
GET_URL_LIMIT = 60_000


def send(
    client: httpx.Client, stack: Stack, method: str, body: bytes, query: str
) -> httpx.Response:
    """One GraphQL request with the API key."""
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    url = f"{stack.gateway_url}/graphql"
    # Percent-encoded by hand: a lone surrogate travels as the bytes a hostile client sends.
    encoded = quote(query.encode("utf-8", "surrogatepass"), safe="")
    # A URL over the HTTP client's own 64 KiB limit never leaves this side: such a query goes
    # as a POST body instead.
    if method == "GET" and len(url) + len(encoded) < GET_URL_LIMIT:
        return client.get(f"{url}?query={encoded}", headers=headers)
    return client.post(url, content=body, headers=headers)


def test_hostile_queries(stack: Stack, sentinel: Sentinel, client: httpx.Client) -> None:
    baseline = asyncio.run(Baseline.take(stack))
    codes: dict[int, int] = {}

    @FUZZ
    @given(document=documents(), method=st.sampled_from(["POST", "POST", "GET"]), data=st.data())
    def one(document: tuple[str, dict[str, Any]], method: str, data: st.DataObject) -> None:
        query, variables = document
        if data.draw(st.integers(0, 9)) == 0:
            # The envelope itself is wrong: wrong types, not an object, not JSON.
            body = data.draw(
                st.sampled_from(
                    [
                        dumps({"query": 5}),
                        dumps({"query": query, "variables": "x"}),
                        dumps({"query": query, "operationName": ["x"]}),
                        dumps([{"query": query}]),
                        b"{not json",
                        nested_text(2000, "{").encode(),
                    ]
                )
            )
        else:
            body = dumps({"query": query, "variables": variables})
        response = send(client, stack, method, body, query)
        codes[response.status_code] = codes.get(response.status_code, 0) + 1
        problem = graphql_problem(response)
        assert problem is None, f"{method} {body[:300]!r}: {problem}"

    one()
    problems = asyncio.run(baseline.problems())
    problems += asyncio.run(sentinel.changes(stack))
    assert problems == [], problems
    assert codes.get(200, 0) > 0, codes
