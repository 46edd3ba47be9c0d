"""The Segment-spec HTTP ingest API: ``POST /v1/{track,identify,page,screen,alias,group,batch}``
and the browser and mobile SDKs' short routes ``/v1/{t,i,p,s,a,g,b}``.

The write key comes as the HTTP Basic username or, from browsers, as ``writeKey`` in the
body; bodies may be gzipped. An event is accepted (200) only after Kafka acknowledged it on
``events.raw``, and only if every service downstream can store it; a rejected call (400
naming the problem) produces nothing. A batch produces its valid calls and names the others.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway import jsonsafe
from gateway.auth import same_secret, write_key_from
from gateway.bodies import (
    BadEncoding,
    BodyTooLarge,
    UnsupportedEncoding,
    encoding_of,
    read_capped,
)
from gateway.intake import EventIntake
from gateway.ratelimit import RateLimiter, whole_seconds
from gateway.segment import EVENT_TYPES, MAX_NESTING, Batch, InvalidEvent, split_batch
from gateway.settings import GatewaySettings
from lodestar.v1 import events_pb2
from services.platform import metrics
from services.platform.bus import Bus
from services.platform.errors import BusUnavailable

log = logging.getLogger(__name__)
# The short routes of analytics.js / analytics-next and the mobile SDKs (``{apiHost}/b``).
SHORT_ROUTES = {kind[0]: kind for kind in [*EVENT_TYPES, "batch"]}
# Rejected calls listed in a batch's answer (all are counted).
REPORTED_REJECTIONS = 100
_NO_KEY = "send the write key as the HTTP Basic username, or as writeKey in the JSON body"


def _error(status: int, code: str, message: str, path: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if path:
        error["path"] = path
    return JSONResponse({"success": False, "error": error}, status_code=status)


class _Refused(Exception):
    """A request answered with ``response`` (a 4xx) before any of its calls is looked at."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


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


def _body_key(body: object) -> str | None:
    """The ``writeKey`` of a browser SDK's body, if it holds one that is valid Unicode."""
    key = body.get("writeKey") if isinstance(body, dict) else None
    if not isinstance(key, str):
        return None
    try:
        key.encode()
    except UnicodeEncodeError:  # a lone surrogate can be no key (nor be compared as bytes)
        return None
    return key


def _calls_in(body: object, most: int) -> int:
    """The calls a batch body holds, what it costs in tokens; 1 when it is malformed or
    holds more than ``most`` (it will be refused with a 400, never a 429 to retry)."""
    items = body.get("batch") if isinstance(body, dict) else None
    return len(items) if isinstance(items, list) and 0 < len(items) <= most else 1


def _drop_keys(body: object) -> None:
    """Remove every ``writeKey`` (the body's, a batch's items') so none can reach an event."""
    if not isinstance(body, dict):
        return
    body.pop("writeKey", None)
    items = body.get("batch")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            item.pop("writeKey", None)


def _with_rejections(response: JSONResponse, batch: Batch) -> JSONResponse:
    """``response`` with the batch's rejected calls: how many, and the first
    :data:`REPORTED_REJECTIONS` with their index, path and reason."""
    body = json.loads(bytes(response.body))
    body["rejectedCount"] = len(batch.rejected)
    body["rejected"] = [
        {"index": index, "code": "invalid_event", "path": problem.path, "message": str(problem)}
        for index, problem in batch.rejected[:REPORTED_REJECTIONS]
    ]
    return JSONResponse(body, status_code=response.status_code)


class IngestApi:
    """Validates Segment calls and produces them to ``lodestar.events.raw.v1``."""

    def __init__(
        self, settings: GatewaySettings, bus: Bus, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.limiter = RateLimiter(
            settings.ingest_rate_limit_per_s, settings.ingest_rate_limit_burst, clock
        )
        # Validation, event building and producing, shared with the GraphQL mutations.
        self.intake = EventIntake(settings, bus)

    def routes(self) -> list[Route]:
        """One route per call type, plus ``/v1/batch``, each also under its short name."""
        routes = [
            Route(f"/v1/{kind}", self._single(kind), methods=["POST"]) for kind in EVENT_TYPES
        ]
        routes.append(Route("/v1/batch", self.batch, methods=["POST"]))
        for short, kind in SHORT_ROUTES.items():
            endpoint = self.batch if kind == "batch" else self._single(kind)
            routes.append(Route(f"/v1/{short}", endpoint, methods=["POST"]))
        return routes

    def paths(self) -> list[str]:
        """The path of every ingest route."""
        return [route.path for route in self.routes()]

    def _single(self, kind: str) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            return await self._handle(request, kind)

        endpoint.__name__ = f"ingest_{kind}"
        return endpoint

    async def batch(self, request: Request) -> JSONResponse:
        """``POST /v1/batch``: the valid calls accepted, the others reported."""
        return await self._handle(request, "batch")

    async def _handle(self, request: Request, kind: str) -> JSONResponse:
        try:
            body = await self._authorized_body(request, kind)
            most = self.settings.ingest_max_batch_events
            self._spend(kind, _calls_in(body, most) if kind == "batch" else 1)
        except _Refused as refused:
            return refused.response
        received_at = datetime.now(UTC)
        client_ip = self._client_ip(request)
        if kind == "batch":
            return await self._batch(body, received_at, client_ip)
        try:
            call = self.intake.build(body, kind, received_at=received_at, client_ip=client_ip)
        except InvalidEvent as exc:
            return _error(400, "invalid_event", str(exc), exc.path)
        return await self._produce(kind, [call])

    def _spend(self, kind: str, count: int) -> None:
        """Take ``count`` events from the write key's bucket, or refuse with a 429."""
        key = self.settings.write_key.get_secret_value()
        self._check_rate(kind, self.limiter.take(key, count), count)

    def _check_rate(self, kind: str, wait: float, count: int) -> None:
        """Refuse ``count`` events with a 429 when the bucket needs ``wait`` seconds more."""
        if wait <= 0:
            return
        seconds = whole_seconds(wait)
        metrics.INGEST_EVENTS.labels(kind, "rate_limited").inc(count)
        metrics.INGEST_REJECTED.labels(kind, "rate_limited").inc(count)
        log.info("ingest rate limited", extra={"fields": {"events": count, "retry_s": seconds}})
        refused = _error(
            429,
            "rate_limited",
            f"more than {self.limiter.rate:g} events a second (bursts of {self.limiter.burst}) "
            f"for this write key; retry in {seconds} s",
        )
        # Retry-After for HTTP clients; X-RateLimit-Reset, in the same seconds to wait, is
        # the one analytics-next reads.
        refused.headers["Retry-After"] = str(seconds)
        refused.headers["X-RateLimit-Reset"] = str(seconds)
        raise _Refused(refused)

    def _client_ip(self, request: Request) -> str:
        """The sender's address (see :mod:`gateway.client_ip`)."""
        peer = request.client.host if request.client else None
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        return self.intake.client_ip(peer, forwarded)

    async def _batch(self, body: object, received_at: datetime, client_ip: str) -> JSONResponse:
        """Produce a batch's valid calls and report its rejected ones: SDKs do not retry a
        4xx, so refusing the batch for one bad call would lose the good ones. Refused whole
        (400) only when its envelope is bad or none of its calls is valid."""
        try:
            batch = split_batch(
                body,
                received_at,
                self.settings.max_event_bytes,
                self.settings.ingest_max_batch_events,
                client_ip=client_ip,
            )
        except InvalidEvent as exc:
            metrics.INGEST_EVENTS.labels("batch", "invalid").inc()
            metrics.INGEST_REJECTED.labels("batch", "invalid_event").inc()
            return _error(400, "invalid_event", str(exc), exc.path)
        if batch.rejected:
            metrics.INGEST_EVENTS.labels("batch", "invalid").inc(len(batch.rejected))
            metrics.INGEST_REJECTED.labels("batch", "invalid_event").inc(len(batch.rejected))
        if not batch.calls:
            first = batch.rejected[0][1]
            refused = _error(400, "invalid_event", str(first), first.path)
            return _with_rejections(refused, batch)
        answer = await self._produce("batch", [(key, event) for _, key, event in batch.calls])
        if answer.status_code != 200 or not batch.rejected:
            return answer
        return _with_rejections(
            JSONResponse({"success": True, "accepted": len(batch.calls)}), batch
        )

    async def _authorized_body(self, request: Request, kind: str) -> object:
        """The request's parsed JSON body, once the write key matched (from the Basic header,
        checked before the body is read, else from the body's ``writeKey``); raises
        :class:`_Refused` with the 4xx to answer."""
        expected = self.settings.write_key.get_secret_value()
        # A request that sends Authorization is judged by it alone, before its body is read.
        by_header = "authorization" in request.headers
        if by_header and not same_secret(write_key_from(request.headers), expected):
            raise _Refused(_error(401, "unauthorized", _NO_KEY))
        if by_header:
            # A key with no token left is told so before its body is read.
            self._check_rate(kind, self.limiter.wait(expected, 1), 1)
        raw = await self._read(request, kind)
        try:
            body = jsonsafe.loads(raw)
        except RecursionError:
            problem = _too_deep(raw, kind)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            problem = _error(400, "malformed_json", f"the body is not valid JSON: {exc}")
        else:
            # The body's key is checked before anything of the call is looked at.
            if not by_header and not same_secret(_body_key(body), expected):
                raise _Refused(_error(401, "unauthorized", _NO_KEY))
            _drop_keys(body)
            return body
        if not by_header:
            # No key could be read: nothing is said about the body.
            raise _Refused(_error(401, "unauthorized", _NO_KEY))
        metrics.INGEST_EVENTS.labels(kind, "malformed").inc()
        metrics.INGEST_REJECTED.labels(kind, "malformed_json").inc()
        raise _Refused(problem)

    async def _read(self, request: Request, kind: str) -> bytes:
        """The body, inflated if gzipped, capped (once inflated) at the call's or the
        batch's limit."""
        limit = self.settings.max_batch_bytes if kind == "batch" else self.settings.max_event_bytes
        try:
            encoding = encoding_of(request.headers.get("content-encoding", ""))
            return await read_capped(
                request.stream(), request.headers.get("content-length", ""), encoding, limit
            )
        except BodyTooLarge as exc:
            metrics.INGEST_EVENTS.labels(kind, "too_large").inc()
            metrics.INGEST_REJECTED.labels(kind, "payload_too_large").inc()
            raise _Refused(_error(400, "payload_too_large", exc.describe())) from None
        except UnsupportedEncoding as exc:
            metrics.INGEST_EVENTS.labels(kind, "malformed").inc()
            metrics.INGEST_REJECTED.labels(kind, "unsupported_encoding").inc()
            raise _Refused(_error(415, "unsupported_encoding", str(exc))) from None
        except BadEncoding as exc:
            metrics.INGEST_EVENTS.labels(kind, "malformed").inc()
            metrics.INGEST_REJECTED.labels(kind, "malformed_body").inc()
            raise _Refused(_error(400, "malformed_body", str(exc))) from None

    async def _produce(
        self, kind: str, calls: Sequence[tuple[str, events_pb2.Event]]
    ) -> JSONResponse:
        try:
            await self.intake.produce(kind, calls)
        except BusUnavailable:
            return _error(503, "unavailable", "the event bus is unavailable; retry with backoff")
        return JSONResponse({"success": True})
