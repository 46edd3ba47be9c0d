"""A known e-mail and phone sent through the whole pipeline rest in clear in no collection of
any database on the MongoDB server(s) (identity, profile and every other service; one server
each with ``LODESTAR_LOCAL_MONGO_SERVERS=per-service``)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.local.stack import DATABASE_OWNERS
from lodestar.v1 import wallet_pb2, wallet_pb2_grpc
from services.platform.mongo import mongo_client
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


async def test_email_and_phone_rest_nowhere_in_clear(platform: Platform) -> None:
    tag = unique("pii").replace("-", "")
    email, phone, name = f"{tag}@private.example", "+14155550199", f"Name{tag}"
    response = await platform.send(
        "/v1/identify",
        {"userId": f"u{tag}", "traits": {"email": email, "phone": phone, "firstName": name}},
    )
    assert response.status_code == 200
    await platform.send("/v1/track", {"userId": f"u{tag}", "event": "Viewed", "messageId": tag})

    async def visible() -> bool:
        customer = await platform.customer("email", email)
        return bool(
            customer and customer["traits"].get("firstName") == name and customer["eventCounts"]
        )

    await eventually(visible, 30, "the profile through GraphQL")
    customer = await platform.customer("phone", phone)
    assert customer is not None
    assert customer["traits"]["email"] == email  # decrypted for the API...

    scanned = 0
    for uri in {platform.stack.mongo_uri_for(owner) for owner in DATABASE_OWNERS}:
        client = mongo_client(uri, "pii-scan")
        try:
            for database_name in await client.list_database_names():
                db = client[database_name]
                for collection in await db.list_collection_names():
                    async for doc in db[collection].find({}):
                        text = str(doc)
                        scanned += 1
                        # ...and stored nowhere in clear.
                        for secret in (email, phone, name):
                            assert secret not in text, f"{secret} in {database_name}.{collection}"
        finally:
            client.close()
    assert scanned > 0


REQUEST_PRIVACY = """
mutation ($kind: PrivacyRequestKind!, $customerId: ID!) {
  requestPrivacy(kind: $kind, customerId: $customerId) {
    id kind state services { service state }
  }
}
"""
PRIVACY_REQUEST = """
query ($id: ID!) {
  privacyRequest(id: $id) {
    id kind state completedAt services { service state completedAt } export
  }
}
"""


async def request_privacy(platform: Platform, kind: str, customer_id: str) -> dict[str, Any]:
    """Submit through GraphQL and wait until every service has answered."""
    response = await platform.graphql(REQUEST_PRIVACY, {"kind": kind, "customerId": customer_id})
    body = response.json()
    assert "errors" not in body, body
    submitted = body["data"]["requestPrivacy"]
    assert submitted["state"] == "PENDING"
    assert {s["service"] for s in submitted["services"]} == {
        "identity",
        "profile",
        "segmentation",
        "recommendation",
        "wallet",
    }
    status: dict[str, Any] = {}

    async def done() -> bool:
        answer = (await platform.graphql(PRIVACY_REQUEST, {"id": submitted["id"]})).json()
        assert "errors" not in answer, answer
        status.update(answer["data"]["privacyRequest"])
        return bool(status["state"] == "DONE")

    await eventually(done, 60, f"the {kind} request answered by every service", 0.5)
    assert [s["state"] for s in status["services"]] == ["DONE"] * 5
    assert status["completedAt"] is not None
    return status


async def test_privacy_export_and_erasure_reach_every_service_and_leave_no_trace(
    platform: Platform,
) -> None:
    tag = unique("erase").replace("-", "")
    email, user_id = f"{tag}@gone.example", f"u{tag}"
    await platform.send(
        "/v1/identify",
        {"userId": user_id, "traits": {"email": email, "plan": tag}, "messageId": f"{tag}-i"},
    )
    for n in range(2):
        await platform.send(
            "/v1/track",
            {
                "userId": user_id,
                "event": "Product Viewed",
                "properties": {"product_id": f"sku-{tag}-{n}"},
                "messageId": f"{tag}-t{n}",
            },
        )
    customer = await platform.wait_for_count(user_id, "Product Viewed", 2)
    customer_id = customer["id"]
    async with platform.stack.grpc_channel("wallet") as channel:
        card = await wallet_pb2_grpc.WalletServiceStub(channel).IssuePass(
            wallet_pb2.IssuePassRequest(
                customer_id=customer_id, kind=wallet_pb2.PASS_KIND_STORE_CARD
            )
        )

    exported = await request_privacy(platform, "EXPORT", customer_id)
    wallet_export = exported["export"]["wallet"]
    assert [p["serial_number"] for p in wallet_export["passes"]] == [card.serial_number]
    profile_export = exported["export"]["profile"]
    assert profile_export["traits"] == {"email": email, "plan": tag}
    # Event ids derive from messageId and content, so the events are told apart by content.
    events = {e["properties"].get("product_id", e["type"]): e for e in profile_export["events"]}
    assert set(events) == {"identify", f"sku-{tag}-0", f"sku-{tag}-1"}
    assert events[f"sku-{tag}-1"]["name"] == "Product Viewed"
    assert events["identify"]["traits"] == {"email": email, "plan": tag}
    identities = {(i["type"], i["value"]) for i in exported["export"]["identity"]["identifiers"]}
    # The pass serial was linked to the customer when the pass was issued.
    assert identities == {
        ("user_id", user_id),
        ("email", email),
        ("wallet_serial", card.serial_number),
    }

    erased = await request_privacy(platform, "ERASE", customer_id)
    assert erased["export"] is None
    assert await platform.customer("email", email) is None
    async with platform.stack.grpc_channel("wallet") as channel:
        voided = await wallet_pb2_grpc.WalletServiceStub(channel).GetPass(
            wallet_pb2.GetPassRequest(serial_number=card.serial_number)
        )
    assert voided.voided
    assert voided.customer_id == ""
    for service in ("identity", "profile", "segmentation", "recommendation", "wallet"):
        # Each service's database on its server (its own one in per-service mode).
        client = mongo_client(platform.stack.mongo_uri_for(service), "erase-scan")
        try:
            db = client[f"lodestar_{service}"]
            for collection in await db.list_collection_names():
                async for doc in db[collection].find({}):
                    text = str(doc)
                    if service == "identity" and collection == "customers":
                        continue  # the erased customer's status record keeps its id only
                    if service == "recommendation" and collection == "items":
                        continue  # product properties (the test's product ids carry the tag)
                    for secret in (customer_id, email, user_id, tag):
                        assert secret not in text, f"{secret} in {service}.{collection}"
        finally:
            client.close()


async def test_privacy_requests_refuse_bad_input_and_unknown_ids_are_null(
    platform: Platform,
) -> None:
    body = (await platform.graphql(REQUEST_PRIVACY, {"kind": "ERASE", "customerId": " "})).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "customerId" in body["errors"][0]["message"]
    body = (await platform.graphql(REQUEST_PRIVACY, {"kind": "FORGET", "customerId": "c"})).json()
    assert "FORGET" in body["errors"][0]["message"]  # not a PrivacyRequestKind
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = (await platform.graphql(PRIVACY_REQUEST, {"id": "no-such-request"})).json()
    assert body == {"data": {"privacyRequest": None}}
