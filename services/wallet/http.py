"""The PassKit web service's HTTP server: uvicorn inside the service's event loop, next to
gRPC, stopped by the service's own shutdown (not by uvicorn's signal handlers)."""

from __future__ import annotations

from starlette.types import ASGIApp

from services.platform.httpserver import QuietUvicorn


class HttpServer(QuietUvicorn):
    """Serve an ASGI app on ``host:port`` until :meth:`stop`."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        super().__init__(app, name="the PassKit web service", host=host, port=port)
