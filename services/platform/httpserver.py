"""uvicorn without its signal handlers: an ASGI app served inside the owner's event loop (next
to gRPC, or in a test), started and stopped by the owner, never by SIGTERM/SIGINT directly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

# How often start() looks whether uvicorn is up yet.
_POLL_S = 0.02


class _SignalFreeServer(uvicorn.Server):
    """A uvicorn server that installs no signal handlers: the owner's runtime has its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install nothing; uvicorn's handlers would stop the server behind the owner's back."""
        yield


class QuietUvicorn:
    """Serve ``app`` on ``host:port``, or on an already bound ``sock`` (so port 0 gives a port
    known before serving), from :meth:`start` until :meth:`stop`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        lifespan: Literal["auto", "on", "off"] = "auto",
        log_level: str | None = None,
    ) -> None:
        self.name = name
        self.sock = sock
        self.server = _SignalFreeServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan=lifespan,
                log_level=log_level,
            )
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        """Serve; return once uvicorn accepts connections. Raise :class:`RuntimeError` naming
        the server when it stops while starting (the port is in use, for one)."""
        self.task = asyncio.create_task(self._serve(), name=self.name)
        async with asyncio.timeout(timeout_s):
            while not self.server.started:
                if self.task.done():
                    if self.sock is not None:
                        self.sock.close()
                    failed, self.task = self.task, None
                    failed.result()
                    raise RuntimeError(f"{self.name} stopped while starting")
                await asyncio.sleep(_POLL_S)

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock] if self.sock is not None else None)
        except SystemExit as exc:
            # uvicorn exits the whole process when it cannot bind; here the owner decides.
            raise RuntimeError(f"{self.name} could not start (port in use?)") from exc

    async def stop(self) -> None:
        """Finish in-flight requests and stop serving."""
        self.server.should_exit = True
        if self.task is not None:
            task, self.task = self.task, None
            await task
