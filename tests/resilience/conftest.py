"""Fixtures of the resilience suite: fault proxies in front of the session's servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import MongoWireServer
from services.platform.mongo import Document, mongo_client
from tests.resilience.proxy import FaultProxy


@pytest.fixture
async def client(mongo_server: MongoWireServer) -> AsyncIterator[AsyncIOMotorClient[Document]]:
    """A motor client of the session's SecantusDB (no proxy)."""
    client = mongo_client(mongo_server.uri, "resilience")
    yield client
    client.close()


@pytest.fixture
async def mongo_proxy(mongo_server: MongoWireServer) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the session's MongoDB-wire server (fast at first)."""
    proxy = FaultProxy("127.0.0.1", mongo_server.port)
    await proxy.start()
    yield proxy
    await proxy.stop()


def proxied_mongo_uri(proxy: FaultProxy) -> str:
    """The connection string that reaches MongoDB through ``proxy``."""
    return f"mongodb://{proxy.address}/?directConnection=true"
