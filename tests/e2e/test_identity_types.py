"""Every identifier type, sent the way SDKs send it, finds the customer through GraphQL."""

from __future__ import annotations

import pytest

from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


async def test_customer_is_found_by_every_identifier_type(platform: Platform) -> None:
    tag = unique("types").replace("-", "")
    user_id, anonymous_id = f"u{tag}", f"anon{tag}"
    email, phone = f"{tag}@Example.com", "+44 20 7946 0958"
    device, loyalty, serial, crm = f"idfa{tag}", f"L{tag}", f"pass{tag}", f"crm{tag}"
    response = await platform.send(
        "/v1/identify",
        {
            "userId": user_id,
            "anonymousId": anonymous_id,
            "traits": {"email": email, "phone": phone, "loyaltyNumber": loyalty},
            "context": {
                "device": {"advertisingId": device},
                "externalIds": [
                    {"id": serial, "type": "wallet_serial", "collection": "users"},
                    {"id": crm, "type": "crm_id", "collection": "users"},
                ],
            },
        },
    )
    assert response.status_code == 200, response.text

    async def known() -> bool:
        return await platform.customer("user_id", user_id) is not None

    await eventually(known, 30, "the customer resolved")
    expected = await platform.customer("user_id", user_id)
    assert expected is not None
    lookups = {
        "anonymous_id": anonymous_id,
        "email": email.upper(),  # normalised on lookup too
        "phone": "+442079460958",
        "device_id": device,
        "loyalty_number": loyalty,
        "wallet_serial": serial,
        "crm_id": crm,
    }
    for type_, value in lookups.items():
        found = await platform.customer(type_, value)
        assert found is not None, type_
        assert found["id"] == expected["id"], type_
    shown = {(i["type"], i["value"]) for i in expected["identifiers"]}
    assert ("email", email.lower()) in shown
    assert ("phone", "+442079460958") in shown


async def test_many_identifier_lookups_in_one_query(platform: Platform) -> None:
    user_id = unique("batch")
    await platform.send("/v1/identify", {"userId": user_id, "traits": {"plan": "x"}})

    async def found() -> bool:
        return await platform.customer("user_id", user_id) is not None

    await eventually(found, 30, "resolved")
    values = [user_id if n % 2 else "nobody" for n in range(10)]
    query = " ".join(
        f'c{n}: customer(by: {{identifier: {{type: "user_id", value: "{v}"}}}}) {{ id }}'
        for n, v in enumerate(values)
    )
    body = (await platform.graphql("{ " + query + " }")).json()
    assert "errors" not in body
    ids = [body["data"][f"c{n}"] for n in range(10)]
    assert ids[0] is None
    assert ids[1] is not None
    assert ids[1] == ids[3]


async def test_bad_phone_is_bad_user_input(platform: Platform) -> None:
    response = await platform.graphql(
        '{ customer(by: {identifier: {type: "phone", value: "12"}}) { id } }'
    )
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "phone" in body["errors"][0]["message"]


async def test_merged_customers_show_one_combined_profile(platform: Platform) -> None:
    tag = unique("merge")
    phone, laptop, user = f"{tag}-phone", f"{tag}-laptop", f"{tag}-user"
    for device, views in ((phone, 2), (laptop, 3)):
        for n in range(views):
            response = await platform.send(
                "/v1/track",
                {"anonymousId": device, "event": "Product Viewed", "messageId": f"{device}-{n}"},
            )
            assert response.status_code == 200

    async def both_counted() -> bool:
        a = await platform.customer("anonymous_id", phone)
        b = await platform.customer("anonymous_id", laptop)
        return bool(a and b and a["eventCounts"] and b["eventCounts"])

    await eventually(both_counted, 30, "both anonymous profiles")
    first = await platform.customer("anonymous_id", phone)
    second = await platform.customer("anonymous_id", laptop)
    assert first is not None
    assert second is not None
    assert first["id"] != second["id"]
    for device in (phone, laptop):
        await platform.send("/v1/identify", {"userId": user, "anonymousId": device})
    customer = await platform.wait_for_count(user, "Product Viewed", 5)
    assert {first["id"], second["id"]} >= {customer["id"]}
    by_old_id = await platform.graphql(
        "query($id: ID!) { customer(by: {id: $id}) { id eventCounts { name count } } }",
        {"id": second["id"] if customer["id"] == first["id"] else first["id"]},
    )
    merged_view = by_old_id.json()["data"]["customer"]
    assert merged_view["id"] == customer["id"]
    assert {"name": "Product Viewed", "count": 5} in merged_view["eventCounts"]
