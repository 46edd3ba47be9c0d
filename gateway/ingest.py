"""The Segment-spec HTTP ingest API: ``POST /v1/{track,identify,page,screen,alias,group,batch}``.

An event is accepted (200) only after Kafka acknowledged it on ``events.raw``, and only if
every service downstream can store it; a rejected request (400 naming the problem) produces
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway import jsonsafe
from gateway.auth import same_secret, write_key_from
from gateway.segment import EVENT_TYPES, MAX_NESTING, InvalidEvent, parse_batch, parse_call
from gateway.settings import GatewaySettings
from lodestar.v1 import events_pb2
from services.platform import metrics, topics
from services.platform.bus import Bus

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, path: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if path:
        error["path"] = path
    return JSONResponse({"success": False, "error": error}, status_code=status)


class _TooLarge(Exception):
    pass


def _too_deep(raw: bytes, kind: str) -> JSONResponse:
    """The 400 for a body nested deeper than the JSON parser goes, naming the call's field
    (``properties``, ``batch[3].context``) where that can be told."""
    keys = jsonsafe.deep_path(raw, MAX_NESTING + 3) or []
    # The field of a call: the top-level key, or in a batch the item's key (or the item).
    field = keys[:1]
    if kind == "batch" and field == ["batch"]:
        field = keys[:3] if len(keys) > 2 and isinstance(keys[2], str) else keys[:2]
    path = "body" if not field or isinstance(field[0], int) else jsonsafe.render(field)
    return _error(
        400, "malformed_json", f"the body is nested deeper than {MAX_NESTING} levels", path
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a larger body is refused without buffering all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class IngestApi:
    """Validates Segment calls and produces them to ``lodestar.events.raw.v1``."""

    def __init__(self, settings: GatewaySettings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus

    def routes(self) -> list[Route]:
        """One route per call type, plus ``/v1/batch``."""
        routes = [
            Route(f"/v1/{kind}", self._single(kind), methods=["POST"]) for kind in EVENT_TYPES
        ]
        routes.append(Route("/v1/batch", self.batch, methods=["POST"]))
        return routes

    def _single(self, kind: str) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            return await self._handle(request, kind)

        endpoint.__name__ = f"ingest_{kind}"
        return endpoint

    async def batch(self, request: Request) -> JSONResponse:
        """``POST /v1/batch``: all calls accepted, or none."""
        return await self._handle(request, "batch")

    async def _handle(self, request: Request, kind: str) -> JSONResponse:
        if not same_secret(
            write_key_from(request.headers), self.settings.write_key.get_secret_value()
        ):
            return _error(401, "unauthorized", "send the write key as the HTTP Basic username")
        limit = self.settings.max_batch_bytes if kind == "batch" else self.settings.max_event_bytes
        try:
            raw = await _read_body(request, limit)
        except _TooLarge:
            metrics.INGEST_EVENTS.labels(kind, "too_large").inc()
            return _error(400, "payload_too_large", f"the body is larger than {limit} bytes")
        try:
            body = jsonsafe.loads(raw)
        except RecursionError:
            metrics.INGEST_EVENTS.labels(kind, "malformed").inc()
            return _too_deep(raw, kind)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            metrics.INGEST_EVENTS.labels(kind, "malformed").inc()
            return _error(400, "malformed_json", f"the body is not valid JSON: {exc}")
        received_at = datetime.now(UTC)
        try:
            calls = (
                parse_batch(body, received_at, self.settings.max_event_bytes)
                if kind == "batch"
                else [parse_call(body, kind, received_at)]
            )
        except InvalidEvent as exc:
            metrics.INGEST_EVENTS.labels(kind, "invalid").inc()
            return _error(400, "invalid_event", str(exc), exc.path)
        return await self._produce(kind, calls)

    async def _produce(
        self, kind: str, calls: Sequence[tuple[str, events_pb2.Event]]
    ) -> JSONResponse:
        try:
            await self.bus.publish_many([(topics.EVENTS_RAW, key, event) for key, event in calls])
        except KafkaError as exc:
            log.warning("produce failed", extra={"fields": {"error": repr(exc)}})
            metrics.INGEST_EVENTS.labels(kind, "unavailable").inc()
            return _error(503, "unavailable", "the event bus is unavailable; retry with backoff")
        metrics.INGEST_EVENTS.labels(kind, "accepted").inc(len(calls))
        return JSONResponse({"success": True})
