"""The whole platform on real ports: five services and the gateway as processes, on the
session's SecantusDB and Tansu, started by the same ``infra.local`` code as ``make run``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from infra.local.servers import KafkaWireServer, MongoWireServer
from infra.local.stack import Stack, StackPorts
from tests.support.platform import Platform


@pytest.fixture(scope="session")
def stack(
    mongo_server: MongoWireServer, kafka_server: KafkaWireServer, log_dir: Path
) -> Iterator[Stack]:
    """The running platform; every e2e test uses its own customers."""
    stack = Stack(
        StackPorts.free(),
        log_dir,
        mongo_uri=mongo_server.uri,
        kafka_bootstrap=kafka_server.bootstrap_servers,
        extra_env={
            "LODESTAR_LOG_LEVEL": "INFO",
            "LODESTAR_IDENTITY_CUSTOM_TYPES": "crm_id",
            # Ticket reminders are checked every second instead of every minute.
            "LODESTAR_WALLET_REMINDER_INTERVAL_S": "1",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def platform(stack: Stack) -> AsyncIterator[Platform]:
    """An HTTP client of the running platform."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield Platform(stack, client)
