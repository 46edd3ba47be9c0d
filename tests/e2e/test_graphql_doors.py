"""The GraphQL door over real ports: no data without the API key (whatever the request looks
like), requests too big refused before they are read or parsed, and no customer data in the
gateway's log when a query fails."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.scopes import Scope
from infra.local.stack import Stack
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def a_phone() -> str:
    return "+336" + "".join(random.choices("0123456789", k=8))


async def test_a_browser_get_with_a_query_and_no_key_reads_nothing(platform: Platform) -> None:
    user_id = unique("door")
    email = f"{user_id}@example.com"
    customer_id = await platform.known_customer(user_id, email=email, plan="gold")
    query = (
        f'{{ customer(by: {{identifier: {{type: "user_id", value: "{user_id}"}}}}) '
        "{ id identifiers { value } traits } }"
    )
    url = f"{platform.stack.gateway_url}/graphql"

    stolen = await platform.client.get(url, params={"query": query}, headers=HTML)
    assert stolen.status_code == 401
    assert stolen.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert email not in stolen.text
    assert customer_id not in stolen.text

    # The control: the same request with the key does read the customer.
    key = {"Authorization": f"Bearer {platform.stack.api_key}"}
    allowed = await platform.client.get(url, params={"query": query}, headers={**HTML, **key})
    assert allowed.status_code == 200
    assert allowed.json()["data"]["customer"]["id"] == customer_id


async def test_the_local_stack_serves_the_graphiql_page_without_key(platform: Platform) -> None:
    response = await platform.client.get(f"{platform.stack.gateway_url}/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


async def test_a_300_kb_query_is_413_and_the_gateway_keeps_serving(platform: Platform) -> None:
    query = "{ " + "segments { id name } " * 15_000 + "}"
    response = await platform.graphql(query)
    assert response.status_code == 413
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "65536 bytes" in error["message"]
    assert (await platform.graphql("{ __typename }")).json() == {"data": {"__typename": "Query"}}


async def test_1000_aliases_are_refused_before_anything_runs(platform: Platform) -> None:
    query = "{ " + " ".join(f"s{n}: segments {{ id }}" for n in range(1_000)) + " }"
    body = (await platform.graphql(query)).json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert "more than 2000 tokens" in error["message"]


async def test_failed_queries_leave_no_customer_data_in_the_gateway_log(
    platform: Platform, stack: Stack
) -> None:
    user_id = unique("logged")
    email = f"{user_id}@example.com"
    phone = a_phone()
    operation = user_id.replace("-", "_")
    by_email = f'customer(by: {{identifier: {{type: "email", value: "{email}"}}}})'
    failures: list[tuple[str, dict[str, Any] | None]] = [
        (f'query {operation} {{ {by_email} {{ id }} "{phone}" }}', None),
        (f"query {operation} {{ {by_email} {{ id shoeSize }} }}", None),
        (
            f"query {operation}($v: ID!, $n: Int!) {{ {by_email} {{ id }} "
            "other: customer(by: {id: $v}) { recommendations(n: $n) { strategy } } }",
            {"v": phone, "n": email},
        ),
        (
            f'query {operation} {{ customer(by: {{id: "{phone}", identifier: '
            f'{{type: "email", value: "{email}"}}}}) {{ id }} }}',
            None,
        ),
    ]
    for query, variables in failures:
        body = (await platform.graphql(query, variables)).json()
        assert body["errors"]
        for error in body["errors"]:
            assert email not in error["message"]
            assert phone not in error["message"]

    log = stack.log_dir / "gateway.log"

    async def all_logged() -> bool:
        return log.read_text(errors="replace").count(operation) >= len(failures) - 1

    # The refusals are logged (by operation name, once parsed), so the log has caught up.
    await eventually(all_logged, 15, "the failed queries in the gateway log", 0.2)
    text = log.read_text(errors="replace")
    assert email not in text
    assert phone not in text
    assert phone.removeprefix("+") not in text


async def test_scoped_keys_over_real_ports(platform: Platform, stack: Stack) -> None:
    """A key made for tests with chosen scopes: its scopes hold, the admin makes and revokes
    keys in the gateway's database, and a revoked key stops within the cache TTL."""
    reader = await stack.create_api_key([Scope.READ_CUSTOMERS], "e2e reader")
    refused = await platform.graphql("{ apiKeys { id } }", api_key=reader)
    assert refused.status_code == 403
    [error] = refused.json()["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN", "scope": "admin"}
    assert (await platform.graphql("{ __typename }", api_key=reader)).status_code == 200

    created = await platform.graphql(
        'mutation { createApiKey(name: "e2e made", scopes: ["wallet"]) { key apiKey { id } } }'
    )
    assert created.status_code == 200, created.text
    made = created.json()["data"]["createApiKey"]
    assert (await platform.graphql("{ __typename }", api_key=made["key"])).status_code == 200
    revoked = await platform.graphql(
        "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }", {"id": made["apiKey"]["id"]}
    )
    assert revoked.json()["data"]["revokeApiKey"]["revokedAt"]

    await stack.revoke_api_key(reader)

    async def both_refused() -> bool:
        codes = [
            (await platform.graphql("{ __typename }", api_key=key)).status_code
            for key in (reader, made["key"])
        ]
        return codes == [401, 401]

    # Revocation reaches the gateway within LODESTAR_GRAPHQL_KEY_CACHE_TTL_S (5 s).
    await eventually(both_refused, 30, "the revoked keys refused", 0.5)
    # The dev key of the stack still works.
    assert (await platform.graphql("{ __typename }")).status_code == 200
