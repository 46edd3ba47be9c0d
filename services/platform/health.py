"""Readiness: whether a process can do its work now, kept apart from whether it is alive.

Liveness says the process runs (Kubernetes restarts a pod that fails it, which cannot bring a
database back), so a dependency outage never touches it. Readiness follows the dependencies:
every few seconds each one is checked (MongoDB answers ``ping``, Kafka answers a metadata
request), and callers may also report what their calls saw (APNs and Google answering, or
not). Each dependency's state is the gauge ``lodestar_dependency_up{dependency=...}`` for
operators; the process is ready while every *required* one is up. Optional ones (a push
service whose outage only delays pushes) make the process degraded, not unready: taking the
wallet out of its Service would stop pass downloads that work without APNs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client import Gauge

from services.platform.bus import Bus

log = logging.getLogger(__name__)

DEPENDENCY_UP = Gauge(
    "lodestar_dependency_up",
    "1 while the dependency answers (its last check or calls), 0 while it does not",
    ["dependency"],
)
CHECK_INTERVAL_S = 2.0
CHECK_TIMEOUT_S = 2.0
# Consecutive failed calls reported by callers before an optional dependency counts as down
# (one failed push is noise; a run of them is an outage).
FAILURES_TO_DOWN = 3

Check = Callable[[], Awaitable[object]]
# Told of each change of readiness, and of each dependency's state change.
ReadyListener = Callable[[bool], Awaitable[None]]
DependencyListener = Callable[[str, bool], Awaitable[None]]


class DependencyHealth:
    """The state of a process's dependencies, from periodic checks and reported calls.

    ``checks`` are probed every ``interval_s`` (each bounded by ``timeout_s``); ``required``
    names those the process cannot work without. Every dependency starts up: the process
    just used them to start.
    """

    def __init__(
        self,
        checks: Mapping[str, Check],
        required: Collection[str],
        *,
        optional: Collection[str] = (),
        interval_s: float = CHECK_INTERVAL_S,
        timeout_s: float = CHECK_TIMEOUT_S,
        failures_to_down: int = FAILURES_TO_DOWN,
    ) -> None:
        self.checks = dict(checks)
        self.required = frozenset(required)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures_to_down = max(1, failures_to_down)
        names = [*self.checks, *self.required, *optional]
        self.up: dict[str, bool] = dict.fromkeys(names, True)
        self._failures: dict[str, int] = dict.fromkeys(names, 0)
        self._ready_listeners: list[ReadyListener] = []
        self._dependency_listeners: list[DependencyListener] = []
        self._published: dict[str, bool] = {}
        self._published_ready: bool | None = None
        for name in names:
            DEPENDENCY_UP.labels(name).set(1)

    @property
    def ready(self) -> bool:
        """True while every required dependency is up."""
        return all(self.up[name] for name in self.required)

    @property
    def degraded(self) -> list[str]:
        """The dependencies that are down, sorted."""
        return sorted(name for name, up in self.up.items() if not up)

    def on_ready(self, listener: ReadyListener) -> None:
        """Call ``listener(ready)`` whenever readiness changes (and once on the first run)."""
        self._ready_listeners.append(listener)

    def on_dependency(self, listener: DependencyListener) -> None:
        """Call ``listener(name, up)`` whenever a dependency's state changes (and once each
        on the first run)."""
        self._dependency_listeners.append(listener)

    def report_to(self, target: HealthReported) -> None:
        """Send readiness and every dependency's state to ``target`` (a gRPC server)."""
        self.on_ready(target.set_ready)
        self.on_dependency(target.set_dependency)

    def report(self, name: str, ok: bool) -> None:
        """A call to ``name`` succeeded or failed: down after :attr:`failures_to_down`
        failures in a row, up again at the first success. Takes effect at once on the gauge,
        and on the listeners at the next :meth:`publish`."""
        if ok:
            self._failures[name] = 0
            self._set(name, True)
            return
        self._failures[name] = self._failures.get(name, 0) + 1
        if self._failures[name] >= self.failures_to_down:
            self._set(name, False)

    def reporter(self, name: str) -> Callable[[bool], None]:
        """``report`` bound to one dependency, for a client to call after each call."""
        return lambda ok: self.report(name, ok)

    def _set(self, name: str, up: bool) -> None:
        if self.up.get(name) == up:
            return
        self.up[name] = up
        DEPENDENCY_UP.labels(name).set(1 if up else 0)
        if up:
            log.info("dependency is back", extra={"fields": {"dependency": name}})
        else:
            log.warning("dependency is down", extra={"fields": {"dependency": name}})

    async def check(self) -> dict[str, bool]:
        """Run every check once (concurrently) and record the answers."""
        names = list(self.checks)
        answers = await asyncio.gather(*(self._probe(self.checks[n]) for n in names))
        for name, ok in zip(names, answers, strict=True):
            self._failures[name] = 0
            self._set(name, ok)
        return dict(zip(names, answers, strict=True))

    async def _probe(self, check: Check) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await check()
        except Exception:
            return False
        return True

    async def publish(self) -> None:
        """Tell the listeners what changed since the last time."""
        for name, up in list(self.up.items()):
            if self._published.get(name) != up:
                self._published[name] = up
                for dependency_listener in self._dependency_listeners:
                    await dependency_listener(name, up)
        ready = self.ready
        if ready != self._published_ready:
            self._published_ready = ready
            for listener in self._ready_listeners:
                await listener(ready)

    async def run(self) -> None:
        """Check and publish every ``interval_s`` until cancelled (a round that fails is
        logged and the next one tries again: the process never ends over its health)."""
        while True:
            started = time.monotonic()
            try:
                await self.check()
                await self.publish()
            except Exception:
                log.exception("dependency health round failed")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def detail(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "unavailable", "dependencies": {name: "up"|"down"}}``:
        unavailable when a required one is down, degraded when only optional ones are."""
        status = "unavailable" if not self.ready else "degraded" if self.degraded else "ok"
        return {
            "status": status,
            "dependencies": {n: "up" if up else "down" for n, up in sorted(self.up.items())},
        }


def mongo_check(uri: str, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[Check, Callable[[], None]]:
    """A MongoDB ``ping`` on a client of its own with short timeouts (the stores' client has
    no socket timeout, and a ping stuck behind its busy connections would say nothing about
    the server), and the function that closes it."""
    timeout_ms = int(timeout_s * 1000)
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        uri,
        appname="lodestar-health",
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms,
        maxPoolSize=1,
    )

    async def ping() -> None:
        await client.admin.command("ping")

    return ping, client.close


def kafka_check(bus: Bus) -> Check:
    """The Kafka check: a metadata request through the producer's client, which fails when
    no broker answers."""

    async def metadata() -> None:
        await bus.check()

    return metadata


class HealthReported(Protocol):
    """Where readiness and dependency states go (:class:`~services.platform.rpc.GrpcServer`)."""

    async def set_ready(self, ready: bool) -> None:
        """Readiness changed."""

    async def set_dependency(self, dependency: str, up: bool) -> None:
        """A dependency's state changed."""


def service_health(
    mongo_uri: str, bus: Bus, *, optional: Collection[str] = ()
) -> tuple[DependencyHealth, Callable[[], None]]:
    """The dependency health of a service on MongoDB and Kafka (both required) and the
    ``optional`` ones its clients report; hand it a server with :meth:`report_to`, run its
    :meth:`DependencyHealth.run` as a background loop and call the returned function at
    shutdown."""
    ping, close = mongo_check(mongo_uri)
    health = DependencyHealth(
        {"mongo": ping, "kafka": kafka_check(bus)}, ["mongo", "kafka"], optional=optional
    )
    return health, close
