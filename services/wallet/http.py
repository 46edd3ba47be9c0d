"""The PassKit web service's HTTP server: uvicorn inside the service's event loop, next to
gRPC, stopped by the service's own shutdown (not by uvicorn's signal handlers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT to the service runtime."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """Serve an ASGI app on ``host:port`` until :meth:`stop`."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.server = _QuietServer(
            uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; raise when the port cannot be bound."""
        self.task = asyncio.create_task(self.server.serve(), name="passkit-http")
        async with asyncio.timeout(timeout_s):
            while not self.server.started:
                if self.task.done():
                    raise RuntimeError("the PassKit web service could not start (port in use?)")
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Finish in-flight requests and stop."""
        self.server.should_exit = True
        if self.task is not None:
            await self.task
