"""``LODESTAR_LOCAL_MONGO_SERVERS=per-service``: the launcher starts one MongoDB-wire server
per database owner, gives each process its own server's URI, and each database lands on its
owner's server only."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pymongo
import pytest

from infra.local.stack import DATABASE_OWNERS, Stack, StackPorts
from services.platform.mongo import Document
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def per_service_stack() -> Iterator[Stack]:
    """A second platform, its databases each on their own server (and its own Kafka: the
    session's one carries the other platform's consumer groups)."""
    with tempfile.TemporaryDirectory(prefix="lodestar-per-service-") as logs:
        stack = Stack(
            StackPorts.free(),
            Path(logs),
            mongo_mode="per-service",
            extra_env={"LODESTAR_MONGO_DATABASE_PREFIX": "perservice"},
        )
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


@pytest.fixture
async def per_service(per_service_stack: Stack) -> AsyncIterator[Platform]:
    """An HTTP client of the per-service platform."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield Platform(per_service_stack, client)


def databases_on(uri: str) -> set[str]:
    """The names of the databases a server holds."""
    client: pymongo.MongoClient[Document] = pymongo.MongoClient(uri)
    try:
        return set(client.list_database_names())
    finally:
        client.close()


async def test_each_owner_gets_its_own_server_and_its_data_lands_there(
    per_service: Platform,
) -> None:
    stack = per_service.stack
    uris = {owner: stack.mongo_uri_for(owner) for owner in DATABASE_OWNERS}
    assert len(set(uris.values())) == len(DATABASE_OWNERS)
    for owner in DATABASE_OWNERS:
        assert stack.env_for(owner)["LODESTAR_MONGO_URI"] == uris[owner]
    assert set(stack.mongo_processes()) == {f"mongodb-{owner}" for owner in DATABASE_OWNERS}

    user = unique("u")
    response = await per_service.send("/v1/identify", {"userId": user, "traits": {"plan": "b"}})
    assert response.status_code == 200
    response = await per_service.send("/v1/track", {"userId": user, "event": "Viewed"})
    assert response.status_code == 200

    async def visible() -> bool:
        customer = await per_service.customer("user_id", user)
        return bool(customer and customer["traits"].get("plan") == "b" and customer["eventCounts"])

    await eventually(visible, 60, "the profile through GraphQL (API key on the gateway's server)")
    for owner in ("identity", "profile", "gateway"):
        held = {name for name in databases_on(uris[owner]) if name.startswith("perservice_")}
        assert held == {f"perservice_{owner}"}, owner
    profile: pymongo.MongoClient[Document] = pymongo.MongoClient(uris["profile"])
    try:
        assert profile["perservice_profile"]["profiles"].count_documents({}) >= 1
    finally:
        profile.close()
