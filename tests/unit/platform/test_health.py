"""Dependency health: checks and reported calls make a dependency down and up again; only
required ones decide readiness; listeners hear changes once; the HTTP readiness doors (the
gateway's and the PassKit web service's) answer 503 only while a required one is down."""

from __future__ import annotations

import asyncio
from typing import cast

import httpx
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.readiness import readyz
from services.platform.health import DependencyHealth
from services.wallet.passes import WalletPasses
from services.wallet.webservice import PassKitWebService


class Switch:
    """A check that fails while ``down`` (or hangs while ``hang``)."""

    def __init__(self) -> None:
        self.down = False
        self.hang = False

    async def __call__(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise ConnectionError("refused")


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("lodestar_dependency_up", {"dependency": name})


async def test_a_failing_or_hanging_check_is_down_and_recovers() -> None:
    mongo = Switch()
    health = DependencyHealth({"unit-mongo": mongo}, ["unit-mongo"], timeout_s=0.05)
    assert await health.check() == {"unit-mongo": True}
    mongo.down = True
    assert await health.check() == {"unit-mongo": False}
    assert not health.ready
    assert gauge("unit-mongo") == 0
    mongo.down, mongo.hang = False, True
    assert await health.check() == {"unit-mongo": False}  # bounded by the timeout
    mongo.hang = False
    assert await health.check() == {"unit-mongo": True}
    assert health.ready
    assert gauge("unit-mongo") == 1


def test_reported_calls_need_a_run_of_failures_and_one_success() -> None:
    health = DependencyHealth({}, [], optional=["unit-apns"], failures_to_down=3)
    report = health.reporter("unit-apns")
    report(False)
    report(False)
    assert health.up["unit-apns"]  # two failed pushes are noise
    report(False)
    assert not health.up["unit-apns"]
    assert gauge("unit-apns") == 0
    report(True)
    assert health.up["unit-apns"]
    report(False)
    assert health.up["unit-apns"]  # the run starts again


def test_only_required_dependencies_decide_readiness() -> None:
    health = DependencyHealth({}, ["unit-kafka"], optional=["unit-google"], failures_to_down=1)
    health.report("unit-google", False)
    assert health.ready
    assert health.detail() == {
        "status": "degraded",
        "dependencies": {"unit-google": "down", "unit-kafka": "up"},
    }
    health.report("unit-kafka", False)
    assert not health.ready
    assert health.detail()["status"] == "unavailable"


async def test_listeners_hear_each_change_once() -> None:
    switch = Switch()
    health = DependencyHealth({"unit-db": switch}, ["unit-db"])
    heard: list[object] = []

    async def ready(value: bool) -> None:
        heard.append(("ready", value))

    async def dependency(name: str, up: bool) -> None:
        heard.append((name, up))

    health.on_ready(ready)
    health.on_dependency(dependency)
    await health.publish()
    await health.publish()
    switch.down = True
    await health.check()
    await health.publish()
    await health.publish()
    switch.down = False
    await health.check()
    await health.publish()
    assert heard == [
        ("unit-db", True),
        ("ready", True),
        ("unit-db", False),
        ("ready", False),
        ("unit-db", True),
        ("ready", True),
    ]


async def _get(app: Starlette, path: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        return await client.get(path)


async def test_readiness_doors_answer_503_only_while_a_required_one_is_down() -> None:
    health = DependencyHealth({}, ["unit-kafka2"], optional=["unit-profile"], failures_to_down=1)
    gateway = Starlette(routes=[Route("/readyz", readyz(health))])
    passkit = PassKitWebService(cast(WalletPasses, object()), health=health).app
    for app in (gateway, passkit):
        assert (await _get(app, "/readyz")).json()["status"] == "ok"
    health.report("unit-profile", False)
    for app in (gateway, passkit):
        answer = await _get(app, "/readyz")
        assert (answer.status_code, answer.json()["status"]) == (200, "degraded")
    health.report("unit-kafka2", False)
    for app in (gateway, passkit):
        answer = await _get(app, "/readyz")
        assert answer.status_code == 503
        assert answer.json()["dependencies"]["unit-kafka2"] == "down"
    # Liveness does not follow the dependencies.
    assert (await _get(passkit, "/healthz")).status_code == 200
