"""A service stops within Kubernetes' 30 s grace after SIGTERM even when its Kafka broker
died while it was busy (each shutdown step is bounded: services/platform/runtime.py)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pymongo
import pytest
from aiokafka import AIOKafkaProducer

from infra.local.servers import (
    KafkaWireServer,
    ManagedProcess,
    MongoWireServer,
    free_port,
    wait_until,
)
from infra.local.stack import Stack, StackPorts
from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import ensure_topics
from tests.support.kafka import unique

# A correctness bound (Kubernetes SIGKILLs at 30 s), generous for a loaded machine: before
# the bounds, a busy profile service took ~28 s here.
GRACE_BOUND_S = 20.0
BACKLOG = 20_000


@pytest.fixture
def kafka(log_dir: Path) -> Iterator[KafkaWireServer]:
    """A broker of this test alone: it is killed."""
    server = KafkaWireServer(free_port(), log_dir)
    server.start()
    yield server
    server.stop()


async def backlog(bootstrap: str, count: int) -> None:
    """``count`` resolved events for 500 customers, waiting on the profile service."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for n in range(count):
            event = events_pb2.Event(
                event_id=f"grace-{n}",
                customer_id=f"grace-customer-{n % 500}",
                name="Viewed",
                type=events_pb2.EVENT_TYPE_TRACK,
                source="web",
            )
            event.timestamp.FromDatetime(datetime.now(UTC))
            sent.append(
                await producer.send(
                    topics.EVENTS_RESOLVED,
                    key=event.customer_id.encode(),
                    value=event.SerializeToString(),
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_a_busy_service_stops_within_the_grace_when_kafka_died_first(
    mongo_server: MongoWireServer, kafka: KafkaWireServer, log_dir: Path
) -> None:
    asyncio.run(ensure_topics(kafka.bootstrap_servers, dict.fromkeys(topics.ALL_TOPICS, 6)))
    asyncio.run(backlog(kafka.bootstrap_servers, BACKLOG))
    stack = lone_process(mongo_server, kafka, log_dir, "profile")
    try:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo_server.uri)
        prefix = stack.env_for("profile")["LODESTAR_MONGO_DATABASE_PREFIX"]
        profiles = client[f"{prefix}_profile"]["profiles"]
        # Busy: it has stored some of the backlog and is working on the rest.
        wait_until(lambda: profiles.estimated_document_count() > 0, 60, "profile busy", 0.1)
        client.close()
        assert kafka.process is not None
        kafka.process.signal(signal.SIGKILL)
        kafka.process.stop()
        # Until the service has met the dead broker (its log says so).
        process = stack.processes["profile"]
        wait_until(lambda: _broker_gone(process), 30, "profile meeting the dead broker", 0.1)
        assert process.process is not None
        assert process.alive
        asked = time.monotonic()
        process.signal(signal.SIGTERM)
        returncode = process.process.wait(60)
        took = time.monotonic() - asked
        assert took < GRACE_BOUND_S, f"stopped {took:.1f} s after SIGTERM"
        # It finished its own shutdown: the watchdog (exit 70) was not needed.
        assert returncode == 0, process.log_tail()
    finally:
        stack.stop()


def test_the_gateway_stops_within_the_grace_with_requests_open_and_kafka_gone(
    mongo_server: MongoWireServer, kafka: KafkaWireServer, log_dir: Path
) -> None:
    stack = lone_process(mongo_server, kafka, log_dir, "gateway")
    try:
        assert kafka.process is not None
        kafka.process.signal(signal.SIGKILL)
        kafka.process.stop()

        async def hang_requests() -> None:
            # Ingest calls wait for a broker that is gone; SIGTERM comes while they do.
            async with httpx.AsyncClient(timeout=60) as client:
                calls = [
                    client.post(
                        f"{stack.gateway_url}/v1/track",
                        json={"userId": f"gw-{n}", "event": "Waiting"},
                        auth=(stack.write_key, ""),
                    )
                    for n in range(10)
                ]
                await asyncio.gather(*calls, return_exceptions=True)

        process = stack.processes["gateway"]
        assert process.process is not None
        requests = threading.Thread(target=lambda: asyncio.run(hang_requests()), daemon=True)
        requests.start()
        # Until the gateway has met the dead broker with the requests open (its log says so).
        wait_until(lambda: _broker_gone(process), 30, "gateway meeting the dead broker", 0.1)
        asked = time.monotonic()
        process.signal(signal.SIGTERM)
        returncode = process.process.wait(60)
        took = time.monotonic() - asked
        assert took < GRACE_BOUND_S, f"stopped {took:.1f} s after SIGTERM"
        # Its own shutdown finished (uvicorn ends by re-raising the SIGTERM it caught, so
        # -15 is its clean exit); the watchdog (exit 70) was not needed.
        assert returncode in (0, -signal.SIGTERM), f"exit {returncode} after {took:.1f} s"
        assert "shutdown did not finish in time" not in process.log_tail()
        requests.join(60)
    finally:
        stack.stop()


def _broker_gone(process: ManagedProcess) -> bool:
    """Whether the process has logged that its Kafka broker does not answer."""
    tail = process.log_tail()
    return any(sign in tail for sign in ("NodeNotReadyError", "Unable connect to node"))


def lone_process(
    mongo_server: MongoWireServer, kafka: KafkaWireServer, log_dir: Path, name: str
) -> Stack:
    """A stack running only ``name``, unsupervised (so the test sees how it exits), on its
    own database prefix and the test's broker (topics created), healthy."""
    asyncio.run(ensure_topics(kafka.bootstrap_servers, dict.fromkeys(topics.ALL_TOPICS, 6)))
    stack = Stack(
        StackPorts.free(),
        log_dir,
        mongo_uri=mongo_server.uri,
        kafka_bootstrap=kafka.bootstrap_servers,
        extra_env={"LODESTAR_MONGO_DATABASE_PREFIX": unique(f"grace-{name}").replace("-", "_")},
        supervise=False,
    )
    stack.start_process(name)
    try:
        stack.wait_healthy(name)
    except BaseException:
        stack.stop()
        raise
    return stack
