"""``python -m infra.local status`` against the running platform: the status file the launcher
writes shows every process ready, each service's consumer lag (scraped from its metrics)
and the last error its log got."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from infra.local.observe import READY
from infra.local.stack import SERVICES, Stack
from infra.local.status import print_status, write_status
from lodestar.v1 import events_pb2
from services.platform import topics
from tests.support.kafka import eventually, unique

pytestmark = pytest.mark.e2e


@pytest.fixture
def observed(stack: Stack) -> Iterator[Stack]:
    """The session's stack with its observer looking every half second, stopped after."""
    stack.observe(interval_s=0.5)
    try:
        yield stack
    finally:
        if stack.observer is not None:
            stack.observer.stop()
            stack.observer = None


def rows_of(path: Path) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(path.read_text())["processes"]}


async def test_the_status_shows_health_lag_and_the_last_error(
    observed: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = observed
    path = tmp_path / "status.json"
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        # An event without an id: identity dead-letters it and logs that at ERROR.
        refused = events_pb2.Event(name=unique("no-id")).SerializeToString()
        await producer.send_and_wait(topics.EVENTS_RAW, key=b"status", value=refused)
    finally:
        await producer.stop()
    seen: dict[str, dict[str, Any]] = {}

    async def observed_all() -> bool:
        write_status(path, stack)
        seen.clear()
        seen.update(rows_of(path))
        return (
            all(seen[name]["health"] == READY for name in (*SERVICES, "gateway", *stack.stand_ins))
            and all(isinstance(seen[name]["consumer_lag"], int) for name in SERVICES)
            and "message dead-lettered" in seen["identity"]["last_error"]
        )

    await eventually(observed_all, 120, "every process ready, with lag and errors", 0.5)
    assert all(seen[name]["consumer_lag"] >= 0 for name in SERVICES)
    # The gateway consumes nothing: no lag rather than a made-up zero.
    assert seen["gateway"]["consumer_lag"] is None
    assert await asyncio.to_thread(print_status, path) == 0
    table = capsys.readouterr().out.splitlines()[1:]
    assert table[0].split()[:8] == [
        "name", "kind", "pid", "state", "health", "restarts", "crashes", "lag"
    ]  # fmt: skip
    identity = next(line for line in table if line.startswith("identity "))
    assert "running" in identity
    assert "ready" in identity
    assert identity.rstrip().endswith("message dead-lettered")
