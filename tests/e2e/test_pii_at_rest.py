"""A known e-mail and phone sent through the whole pipeline rest in clear in no collection of
any database on the MongoDB server (identity, profile and every other service)."""

from __future__ import annotations

import pytest

from infra.local.servers import MongoWireServer
from infra.local.stack import Stack
from services.platform.mongo import mongo_client
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


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


async def test_privacy_erasure_reaches_every_service_and_leaves_no_trace(
    platform: Platform, stack: Stack, mongo_server: MongoWireServer
) -> None:
    from aiokafka import AIOKafkaProducer
    from google.protobuf.json_format import MessageToDict

    from lodestar.v1 import events_pb2
    from services.platform import topics
    from tests.support.kafka import read_all

    tag = unique("erase").replace("-", "")
    email, user_id = f"{tag}@gone.example", f"u{tag}"
    await platform.send(
        "/v1/identify", {"userId": user_id, "traits": {"email": email, "plan": tag}}
    )

    async def known() -> bool:
        customer = await platform.customer("email", email)
        return bool(customer and customer["traits"].get("plan") == tag)

    await eventually(known, 30, "the profile")
    customer = await platform.customer("email", email)
    assert customer is not None
    customer_id = customer["id"]

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for kind in (events_pb2.PRIVACY_REQUEST_KIND_EXPORT, events_pb2.PRIVACY_REQUEST_KIND_ERASE):
            request = events_pb2.PrivacyRequest(
                request_id=f"{tag}-{kind}", kind=kind, customer_id=customer_id
            )
            await producer.send_and_wait(
                topics.PRIVACY, key=customer_id.encode(), value=request.SerializeToString()
            )
    finally:
        await producer.stop()

    answers: dict[tuple[str, int], events_pb2.PrivacyCompleted] = {}

    async def all_answered() -> bool:
        for record in await read_all(stack.kafka_bootstrap, topics.PRIVACY_COMPLETED):
            done = events_pb2.PrivacyCompleted.FromString(record.value)
            if done.request_id.startswith(tag):
                answers[(done.service, done.kind)] = done
        return len(answers) == 4

    await eventually(all_answered, 60, "identity and profile answering export and erase", 0.5)
    profile_export = MessageToDict(
        answers[("profile", events_pb2.PRIVACY_REQUEST_KIND_EXPORT)].export
    )
    assert profile_export["traits"] == {"email": email, "plan": tag}
    identity_export = MessageToDict(
        answers[("identity", events_pb2.PRIVACY_REQUEST_KIND_EXPORT)].export
    )
    exported = {(i["type"], i["value"]) for i in identity_export["identifiers"]}
    assert exported == {("user_id", user_id), ("email", email)}

    assert await platform.customer("email", email) is None
    client = mongo_client(mongo_server.uri, "erase-scan")
    try:
        for service in ("identity", "profile"):
            db = client[f"lodestar_{service}"]
            for collection in await db.list_collection_names():
                async for doc in db[collection].find({}):
                    text = str(doc)
                    if service == "identity" and collection == "customers":
                        continue  # the erased customer's status record keeps its id only
                    for secret in (customer_id, email, user_id, tag):
                        assert secret not in text, f"{secret} in {service}.{collection}"
    finally:
        client.close()
