"""Replicas: the launcher runs two profile processes in one consumer group over 12
partitions, each on its own ports; both take a share of the events, and when one is killed
mid-stream the supervisor restarts it and every count stays exact. The stack's MongoDB-wire
server keeps its data in files: killed, it is restarted on its port with the data."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.local.servers import KafkaWireServer, free_port
from infra.local.stack import Stack, StackPorts
from services.platform import topics
from tests.support.kafka import eventually, group_lag, partitions_of, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e
PARTITIONS = 12


@pytest.fixture(scope="module")
def replicated(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own (its topics have 12 partitions) with two profile replicas, and
    its own MongoDB-wire server with file storage."""
    kafka = KafkaWireServer(free_port(), log_dir / "replicas")
    kafka.start()
    stack = Stack(
        StackPorts.free(),
        log_dir / "replicas",
        kafka_bootstrap=kafka.bootstrap_servers,
        mongo_storage_dir=tmp_path_factory.mktemp("mongo-files"),
        extra_env={"LODESTAR_MONGO_DATABASE_PREFIX": unique("replicas").replace("-", "_")},
        replicas={"profile": 2},
        partitions=PARTITIONS,
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        kafka.stop()


async def consumed(stack: Stack, name: str) -> float:
    """Resolved events a profile process has handled (its own /metrics)."""
    token = stack.env_for(name).get("LODESTAR_METRICS_TOKEN")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"http://127.0.0.1:{stack.ports.metrics[name]}/metrics",
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "lodestar_bus_consumed_total"
        and sample.labels.get("group") == "profile"
        and sample.labels.get("topic") == topics.EVENTS_RESOLVED
    )


async def test_two_replicas_share_the_group_and_losing_one_loses_nothing(
    replicated: Stack,
) -> None:
    stack = replicated
    assert stack.service_processes().count("profile-2") == 1
    assert stack.ports.grpc["profile-2"] != stack.ports.grpc["profile"]
    assert stack.ports.metrics["profile-2"] != stack.ports.metrics["profile"]
    assert len(await partitions_of(stack.kafka_bootstrap, topics.EVENTS_RESOLVED)) == PARTITIONS
    users = [unique("replica") for _ in range(24)]
    per_user = 20
    async with httpx.AsyncClient(timeout=30) as client:
        platform = Platform(stack, client)

        async def send(round_: int) -> None:
            batch = [
                {
                    "type": "track",
                    "userId": user,
                    "event": "Replica Test",
                    "messageId": f"{user}-{round_}",
                }
                for user in users
            ]
            response = await platform.send("/v1/batch", {"batch": batch})
            assert response.status_code == 200, response.text

        for round_ in range(per_user // 2):
            await send(round_)
        # Both replicas hold partitions of the group and take a share of the events.
        for name in ("profile", "profile-2"):

            async def working(name: str = name) -> bool:
                return await consumed(stack, name) > 0

            await eventually(working, 60, f"{name} handling events", 0.5)
        restarts = stack.restarts("profile-2")
        await asyncio.to_thread(stack.kill, "profile-2")
        for round_ in range(per_user // 2, per_user):
            await send(round_)
        await asyncio.to_thread(stack.wait_running, "profile-2", 120)
        assert stack.restarts("profile-2") == restarts + 1
        for user in users:
            await platform.wait_for_count(user, "Replica Test", per_user, timeout_s=120)

        async def drained() -> bool:
            return await group_lag(stack.kafka_bootstrap, "profile", topics.EVENTS_RESOLVED) == 0

        await eventually(drained, 60, "profile group caught up", 0.5)
        for user in users:
            customer = await platform.customer("user_id", user) or {}
            counts = {c["name"]: c["count"] for c in customer["eventCounts"]}
            assert counts == {"Replica Test": per_user}, (user, counts)
    rows = {row.name: row for row in stack.status()}
    assert rows["profile-2"].state == "running"
    assert rows["profile-2"].restarts == restarts + 1
    assert rows["profile"].restarts == 0

    # The database server dies: restarted on its port, with its data (file storage).
    port = stack.ports.mongo
    await asyncio.to_thread(stack.kill, "mongodb")
    await asyncio.to_thread(stack.wait_running, "mongodb", 120)
    assert stack.restarts("mongodb") == 1
    assert stack.servers()["mongodb"].port == port
    async with httpx.AsyncClient(timeout=30) as client:
        platform = Platform(stack, client)
        for user in users:
            customer = await platform.wait_for_count(user, "Replica Test", per_user, 120)
            counts = {c["name"]: c["count"] for c in customer["eventCounts"]}
            assert counts == {"Replica Test": per_user}, (user, counts)
