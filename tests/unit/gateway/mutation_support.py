"""Running mutations in process: the gateway's GraphQL app over fake service stubs, as a
principal of the test's choosing, with a bus that records what would reach Kafka."""

from __future__ import annotations

import json
from typing import Any, cast

import grpc
import httpx
from grpc.aio import AioRpcError, Metadata

from gateway.app import LodestarGraphQL
from gateway.clients import ServiceClients
from gateway.intake import EventIntake
from gateway.schema import build_schema
from gateway.scopes import ALL_SCOPES, Principal, Scope
from gateway.settings import GatewaySettings
from tests.unit.gateway.test_ingest_http import RecordingBus

WRITE_KEY = "wk_test_12345"
SETTINGS = GatewaySettings(write_key=WRITE_KEY)
SCHEMA = build_schema(SETTINGS)
EVERYTHING = Principal("k-all", "all", ALL_SCOPES)


def principal_without(scope: Scope) -> Principal:
    """A key holding every scope but ``scope``."""
    return Principal("k-some", "some", ALL_SCOPES - {scope})


def rpc_error(
    code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, str], ...] = ()
) -> AioRpcError:
    """What a stub raises when the service answered ``code``."""
    return AioRpcError(code, Metadata(), Metadata(*trailers), details=details)


class AsPrincipal(LodestarGraphQL):
    """The app with ``principal`` in every request's context."""

    def __init__(self, clients: Any, intake: EventIntake, principal: Principal) -> None:
        super().__init__(cast(ServiceClients, clients), SCHEMA, False, intake)
        self.principal = principal

    async def get_context(self, request: Any, response: Any = None) -> dict[str, Any]:
        context = await super().get_context(request, response)
        context["principal"] = self.principal
        return context


async def graphql(
    clients: Any,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    principal: Principal = EVERYTHING,
    bus: RecordingBus | None = None,
) -> dict[str, Any]:
    """POST ``query`` to the GraphQL app; the answer must be a 200 with a JSON body."""
    intake = EventIntake(SETTINGS, bus or RecordingBus())
    app = AsPrincipal(clients, intake, principal)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        # Encoded here: lone surrogates and NaN written as Python's encoder writes them.
        payload = json.dumps({"query": query, "variables": variables or {}})
        response = await http.post(
            "/graphql", content=payload, headers={"content-type": "application/json"}
        )
    body: dict[str, Any] = response.json()
    # GraphQL over HTTP: an operation refused whole for a missing scope is a 403.
    codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
    refused = not any((body.get("data") or {}).values()) and codes == {"FORBIDDEN"}
    assert response.status_code == (403 if refused else 200), response.text
    return body


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    """The one error of ``body``."""
    assert len(body.get("errors") or []) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error
