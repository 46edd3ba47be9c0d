"""The gateway's readiness (``/readyz``), apart from its liveness (``/healthz``).

Kafka is required: without it no accepted event could be published, so the gateway leaves
its Service until Kafka answers again. So is MongoDB when it holds the API keys. The services
behind it are optional: while one is down only the GraphQL fields it serves fail (with
``SERVICE_UNAVAILABLE``), and ingestion goes on, so the gateway says ``degraded`` but stays
ready.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.clients import SERVICES, ServiceClients
from gateway.settings import GatewaySettings
from services.platform.bus import Bus
from services.platform.health import Check, DependencyHealth, kafka_check, mongo_check


def gateway_health(
    settings: GatewaySettings, bus: Bus, clients: ServiceClients, *, key_store: bool
) -> tuple[DependencyHealth, Callable[[], None]]:
    """The gateway's dependency health (Kafka, the key store's MongoDB when ``key_store``,
    and each service's own readiness) and the function that closes its MongoDB check."""
    checks: dict[str, Check] = {"kafka": kafka_check(bus)}
    required = ["kafka"]
    close: Callable[[], None] = lambda: None  # noqa: E731
    if key_store:
        checks["mongo"], close = mongo_check(settings.mongo_uri)
        required.append("mongo")
    for service in SERVICES:
        checks[service] = partial(clients.ready, service)
    return DependencyHealth(checks, required), close


def readyz(health: DependencyHealth) -> Callable[[Request], Response]:
    """``GET /readyz``: 200 while ready (``ok`` or ``degraded``), 503 while a required
    dependency is down; the body names each dependency's state."""

    async def endpoint(_: Request) -> Response:
        return JSONResponse(health.detail(), status_code=200 if health.ready else 503)

    return endpoint  # type: ignore[return-value]
