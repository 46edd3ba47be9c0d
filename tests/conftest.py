"""Session fixtures: one SecantusDB and one Tansu for the whole run, started on free ports by
the same launchers ``make run`` uses. Unit tests never request them, so they start only when
an integration or e2e test runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.servers import KafkaWireServer, MongoWireServer, free_port


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
