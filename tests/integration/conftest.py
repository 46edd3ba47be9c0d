"""Integration fixtures shared by the suites that talk to the session's servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import MongoWireServer
from services.platform.mongo import Document, mongo_client


@pytest.fixture
async def client(mongo_server: MongoWireServer) -> AsyncIterator[AsyncIOMotorClient[Document]]:
    """A motor client of the session's SecantusDB."""
    client = mongo_client(mongo_server.uri, "tests")
    yield client
    client.close()
