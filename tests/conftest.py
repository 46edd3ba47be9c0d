"""Session fixtures: one SecantusDB and one Tansu for the whole run, started on free ports by
the same launchers ``make run`` uses, and the whole platform on them (``stack``) for the e2e
and security suites. Unit tests never request them, so they start only when an integration,
e2e or security test runs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from infra.local.servers import KafkaWireServer, MongoWireServer, free_port
from infra.local.stack import Stack, StackPorts, mongo_mode_from
from tests.support.platform import Platform


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``run_last`` (the log scan) run after everything else of the session."""
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the servers and services of this run write their logs."""
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def mongo_server(log_dir: Path) -> Iterator[MongoWireServer]:
    """A SecantusDB server (MongoDB wire protocol) for the session."""
    server = MongoWireServer(free_port(), log_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_server(log_dir: Path) -> Iterator[KafkaWireServer]:
    """A Tansu broker (Kafka wire protocol, in-memory) for the session."""
    server = KafkaWireServer(free_port(), log_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(
    mongo_server: MongoWireServer, kafka_server: KafkaWireServer, log_dir: Path
) -> Iterator[Stack]:
    """The running platform; every e2e test uses its own customers. With
    ``LODESTAR_LOCAL_MONGO_SERVERS=per-service`` it starts its own server per database."""
    per_service = mongo_mode_from(os.environ) == "per-service"
    stack = Stack(
        StackPorts.free(),
        log_dir,
        mongo_uri=None if per_service else mongo_server.uri,
        kafka_bootstrap=kafka_server.bootstrap_servers,
        extra_env={
            "LODESTAR_LOG_LEVEL": "INFO",
            "LODESTAR_IDENTITY_CUSTOM_TYPES": "crm_id",
            # Ticket reminders are checked every second instead of every minute.
            "LODESTAR_WALLET_REMINDER_INTERVAL_S": "1",
            # Pass download links expire in seconds, so a test can see one expire.
            "LODESTAR_WALLET_DOWNLOAD_LINK_TTL_S": "5",
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
