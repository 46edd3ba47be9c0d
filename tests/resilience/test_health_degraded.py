"""Readiness follows the dependencies and recovers, liveness does not move: a service's gRPC
health and ``lodestar_dependency_up`` while MongoDB, then Kafka, stop answering (a fault proxy
blackholes them) and once they answer again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from infra.local.servers import KafkaWireServer, free_port
from infra.local.stack import SERVICES, Stack
from services.platform.bus import Bus, BusConfig
from services.platform.health import DependencyHealth, service_health
from services.platform.rpc import DEPENDENCY_PREFIX, LIVENESS, GrpcServer, check_health
from tests.resilience.conftest import proxied_mongo_uri
from tests.resilience.proxy import FaultProxy
from tests.support.kafka import eventually

SERVICE = "lodestar.test.Resilient"


class ProxiedKafka(KafkaWireServer):
    """A Tansu broker that advertises the proxy's address, so every connection of its
    clients (not only the bootstrap one) goes through the proxy."""

    name = "tansu-proxied"

    def __init__(self, port: int, log_dir: Path, advertised: str) -> None:
        super().__init__(port, log_dir)
        self.advertised = advertised

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--advertised-listener-url")
        command[at + 1] = f"tcp://{self.advertised}"
        return command


@pytest.fixture
async def kafka_proxy(log_dir: Path) -> AsyncIterator[FaultProxy]:
    """A broker of its own behind a fault proxy (the session's broker must stay reachable)."""
    port = free_port()
    proxy = FaultProxy("127.0.0.1", port)
    await proxy.start()
    broker = ProxiedKafka(port, log_dir, proxy.address)
    await asyncio.to_thread(broker.start)
    try:
        yield proxy
    finally:
        await proxy.stop()
        await asyncio.to_thread(broker.stop)


@pytest.fixture
async def served(
    mongo_proxy: FaultProxy, kafka_proxy: FaultProxy
) -> AsyncIterator[tuple[str, DependencyHealth]]:
    """A gRPC server whose health follows MongoDB and Kafka, both behind fault proxies."""
    bus = Bus(BusConfig(kafka_proxy.address, "resilience-health"))
    await bus.start()
    health, close = service_health(proxied_mongo_uri(mongo_proxy), bus)
    health.interval_s = 0.2
    health.timeout_s = 1.0
    server = GrpcServer("127.0.0.1", 0, [SERVICE], lambda _: None)
    port = await server.start()
    health.report_to(server)
    watching = asyncio.create_task(health.run())
    try:
        yield f"127.0.0.1:{port}", health
    finally:
        mongo_proxy.fast()
        kafka_proxy.fast()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await server.stop(0.5)
        # Closing talks to the server through the proxy, which runs on this loop.
        await asyncio.to_thread(close)
        await bus.stop()


async def states(target: str) -> dict[str, bool]:
    names = {
        "ready": "",
        "service": SERVICE,
        "live": LIVENESS,
        "mongo": DEPENDENCY_PREFIX + "mongo",
        "kafka": DEPENDENCY_PREFIX + "kafka",
    }
    answers = await asyncio.gather(*(check_health(target, n) for n in names.values()))
    return dict(zip(names, answers, strict=True))


def gauge(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("lodestar_dependency_up", {"dependency": dependency})


async def until_states(target: str, wanted: dict[str, bool], what: str) -> None:
    async def reached() -> bool:
        now = await states(target)
        return all(now[k] == v for k, v in wanted.items())

    await eventually(reached, 30, what, interval_s=0.2)


async def test_mongo_then_kafka_outage_is_unready_but_alive_and_recovers(
    served: tuple[str, DependencyHealth], mongo_proxy: FaultProxy, kafka_proxy: FaultProxy
) -> None:
    target, health = served
    all_up = {"ready": True, "service": True, "live": True, "mongo": True, "kafka": True}
    await until_states(target, all_up, "ready at start")

    mongo_proxy.blackhole()
    await until_states(
        target,
        {"ready": False, "service": False, "live": True, "mongo": False, "kafka": True},
        "NOT_SERVING while MongoDB does not answer",
    )
    assert gauge("mongo") == 0
    assert health.detail() == {
        "status": "unavailable",
        "dependencies": {"kafka": "up", "mongo": "down"},
    }
    mongo_proxy.fast()
    await until_states(target, all_up, "SERVING again once MongoDB answers")
    assert gauge("mongo") == 1

    kafka_proxy.blackhole()
    await until_states(
        target,
        {"ready": False, "service": False, "live": True, "mongo": True, "kafka": False},
        "NOT_SERVING while Kafka does not answer",
    )
    assert gauge("kafka") == 0
    kafka_proxy.fast()
    await until_states(target, all_up, "SERVING again once Kafka answers")
    assert gauge("kafka") == 1


@pytest.mark.e2e
async def test_the_running_stack_is_alive_and_ready(stack: Stack) -> None:
    """Every service answers liveness and readiness, and the gateway's and the PassKit web
    service's /readyz say ok with each dependency up (/healthz stays plain liveness)."""
    for name in SERVICES:
        target = stack.grpc_target(name)
        assert await check_health(target, LIVENESS), name
        assert await check_health(target, ""), name
        assert await check_health(target, DEPENDENCY_PREFIX + "mongo"), name
    async with httpx.AsyncClient(timeout=30) as http:

        async def gateway_ready() -> bool:
            answer = await http.get(f"{stack.gateway_url}/readyz")
            return answer.status_code == 200 and answer.json()["status"] == "ok"

        # The gateway checks the services every few seconds: ready once all answered.
        await eventually(gateway_ready, 30, "the gateway ready with every service up")
        body = (await http.get(f"{stack.gateway_url}/readyz")).json()
        assert set(body["dependencies"]) == {"kafka", "mongo", *SERVICES}
        passkit = await http.get(f"{stack.passkit_url}/readyz")
        assert passkit.status_code == 200
        assert set(passkit.json()["dependencies"]) == {"mongo", "kafka", "apns", "google"}
        assert (await http.get(f"{stack.gateway_url}/healthz")).json() == {"status": "ok"}
