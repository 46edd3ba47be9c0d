"""One event flowing from the ingest API to the 360-degree GraphQL query, over real ports."""

from __future__ import annotations

import pytest

from infra.local.stack import SERVICES, Stack, grpc_serving
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


async def test_identify_and_track_show_up_in_graphql(platform: Platform) -> None:
    user_id = unique("user")
    email = f"{user_id}@Example.com"
    identify = await platform.send(
        "/v1/identify",
        {"userId": user_id, "traits": {"email": email, "firstName": "Ada", "plan": "gold"}},
    )
    assert identify.status_code == 200
    assert identify.json() == {"success": True}
    for n in range(3):
        track = await platform.send(
            "/v1/track",
            {
                "userId": user_id,
                "event": "Product Viewed",
                "messageId": f"{user_id}-view-{n}",
                "properties": {"product_id": "sku-1"},
            },
        )
        assert track.status_code == 200

    customer = await platform.wait_for_count(user_id, "Product Viewed", 3)
    assert customer["traits"] == {"email": email, "firstName": "Ada", "plan": "gold"}
    assert {"type": "user_id", "value": user_id} in customer["identifiers"]
    assert {"type": "email", "value": email.lower()} in customer["identifiers"]
    assert customer["firstSeen"] is not None

    # The same customer is found by e-mail (normalised) and by id.
    by_email = await platform.customer("email", email.upper())
    assert by_email is not None
    assert by_email["id"] == customer["id"]
    by_id = await platform.graphql(
        "query($id: ID!) { customer(by: {id: $id}) { id traits } }", {"id": customer["id"]}
    )
    assert by_id.json()["data"]["customer"]["traits"]["plan"] == "gold"


async def test_batch_with_anonymous_then_known_user(platform: Platform) -> None:
    anonymous = unique("anon")
    user_id = unique("user")
    response = await platform.send(
        "/v1/batch",
        {
            "batch": [
                {"type": "page", "anonymousId": anonymous, "name": "Home"},
                {
                    "type": "track",
                    "anonymousId": anonymous,
                    "userId": user_id,
                    "event": "Signed Up",
                },
                {
                    "type": "track",
                    "userId": user_id,
                    "event": "Signed Up",
                    "messageId": f"{user_id}-2",
                },
            ]
        },
    )
    assert response.status_code == 200
    customer = await platform.wait_for_count(user_id, "Signed Up", 2)
    by_anonymous = await platform.customer("anonymous_id", anonymous)
    assert by_anonymous is not None
    assert by_anonymous["id"] == customer["id"]


async def test_redelivered_message_id_counts_once(platform: Platform) -> None:
    user_id = unique("user")
    body = {"userId": user_id, "event": "Coupon Used", "messageId": f"{user_id}-once"}
    for _ in range(3):
        assert (await platform.send("/v1/track", body)).status_code == 200
    marker = {"userId": user_id, "event": "Marker", "messageId": f"{user_id}-marker"}
    assert (await platform.send("/v1/track", marker)).status_code == 200
    customer = await platform.wait_for_count(user_id, "Marker", 1)
    counts = {c["name"]: c["count"] for c in customer["eventCounts"]}
    assert counts == {"Coupon Used": 1, "Marker": 1}


async def test_unknown_customer_is_null_without_error(platform: Platform) -> None:
    response = await platform.graphql(
        '{ a: customer(by: {identifier: {type: "email", value: "nobody@example.com"}}) { id } '
        '  b: customer(by: {id: "no-such-customer"}) { id } }'
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"a": None, "b": None}}


async def test_bad_identifier_type_is_bad_user_input(platform: Platform) -> None:
    response = await platform.graphql(
        '{ customer(by: {identifier: {type: "shoe_size", value: "42"}}) { id } }'
    )
    body = response.json()
    assert body["data"] == {"customer": None}
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "shoe_size" in body["errors"][0]["message"]


async def test_id_and_identifier_together_is_bad_user_input(platform: Platform) -> None:
    response = await platform.graphql(
        '{ customer(by: {id: "x", identifier: {type: "email", value: "a@b.c"}}) { id } }'
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("api_key", ["", "wrong-key-123"])
async def test_graphql_without_the_api_key_is_401(platform: Platform, api_key: str) -> None:
    response = await platform.graphql('{ customer(by: {id: "x"}) { id } }', api_key=api_key)
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_every_service_reports_serving(stack: Stack) -> None:
    for name in SERVICES:
        assert grpc_serving(stack.grpc_target(name)), name


async def test_metrics_are_exposed(platform: Platform, stack: Stack) -> None:
    await platform.send("/v1/track", {"userId": unique("m"), "event": "Metric Probe"})
    gateway = await platform.client.get(f"{stack.gateway_url}/metrics")
    assert gateway.status_code == 200
    assert 'lodestar_ingest_events_total{outcome="accepted",type="track"}' in gateway.text

    async def identity_counted() -> bool:
        reply = await platform.client.get(f"http://127.0.0.1:{stack.ports.metrics['identity']}/")
        return "lodestar_bus_consumed_total{" in reply.text

    await eventually(identity_counted, 15, "identity counting consumed messages")


async def test_query_mistakes_are_reported_not_masked(platform: Platform) -> None:
    response = await platform.graphql('{ customer(by: {id: "x"}) { shoeSize } }')
    errors = response.json()["errors"]
    assert "shoeSize" in errors[0]["message"]
