"""CORS for the ingest routes only, so analytics.js in a page on another origin can send.

Configured origins only (``LODESTAR_INGEST_CORS_ORIGINS``; ``*`` for any); none by default,
when nothing here changes a response. No credentials are ever allowed: the browser SDK sends
its write key in the body, or as the Basic ``Authorization`` header it sets itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_METHODS = "POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding"
# What a page may read of an answer: the rate-limit headers analytics-next waits by.
EXPOSE_HEADERS = "Retry-After, X-RateLimit-Reset"
# Browsers cap it lower (Chrome: 2 h); a day spares them a preflight per call.
MAX_AGE_S = 86_400


class IngestCors:
    """ASGI middleware answering CORS preflights and marking answers on the ``paths`` given
    (the ingest routes) for the allowed ``origins``; every other path passes untouched."""

    def __init__(self, app: ASGIApp, origins: Iterable[str], paths: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.any_origin = "*" in self.origins
        self.paths = frozenset(paths)

    def _allow_origin(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or ``None``."""
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.origins or scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self._allow_origin(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(allowed)(scope, receive, send)
            return
        if allowed is None:
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                marked = MutableHeaders(scope=message)
                marked["Access-Control-Allow-Origin"] = allowed
                marked["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
                if allowed != "*":
                    marked.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_marked)

    def _preflight(self, allowed: str | None) -> Response:
        if allowed is None:
            # The origin is not echoed: it is the client's text.
            return JSONResponse(
                {
                    "success": False,
                    "error": {
                        "code": "cors_origin_not_allowed",
                        "message": "this origin may not call the ingest API "
                        "(see LODESTAR_INGEST_CORS_ORIGINS)",
                    },
                },
                status_code=403,
            )
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_S),
        }
        if allowed != "*":
            headers["Vary"] = "Origin"
        return Response(status_code=204, headers=headers)
