"""A known e-mail and phone sent through the whole pipeline rest in clear in no collection of
any database on the MongoDB server (identity, profile and every other service)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from infra.local.servers import MongoWireServer
from infra.local.stack import Stack
from services.platform.mongo import mongo_client
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


@pytest.fixture
async def platform(stack: Stack) -> AsyncIterator[Platform]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield Platform(stack, client)


async def test_email_and_phone_rest_nowhere_in_clear(
    platform: Platform, mongo_server: MongoWireServer
) -> None:
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

    client = mongo_client(mongo_server.uri, "pii-scan")
    try:
        scanned = 0
        for database_name in await client.list_database_names():
            db = client[database_name]
            for collection in await db.list_collection_names():
                async for doc in db[collection].find({}):
                    text = str(doc)
                    scanned += 1
                    # ...and stored nowhere in clear.
                    for secret in (email, phone, name):
                        assert secret not in text, f"{secret} in {database_name}.{collection}"
        assert scanned > 0
    finally:
        client.close()
