"""uvicorn without its signal handlers: an ASGI app served inside the owner's event loop (next
to gRPC, or in a test), started and stopped by the owner, never by SIGTERM/SIGINT directly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from http import HTTPStatus
from typing import Any, Literal

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

# How often start() looks whether uvicorn is up yet.
_POLL_S = 0.02
# The most of a request's head (request line and headers) read before it is refused, unless
# the server's config (``h11_max_incomplete_event_size``) says otherwise; uvicorn's default.
HEAD_LIMIT_BYTES = 16 * 1024
# After refusing a request: how much more of it is read and dropped, and for how long, so the
# refusal reaches the client (closing with unread bytes resets the connection).
_DRAIN_BYTES = 8 * 1024 * 1024
_DRAIN_S = 2.0


class RefusingH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with the refusal of a request it cannot read said
    plainly: a head past its limit (:data:`HEAD_LIMIT_BYTES` by default) is ``431`` naming
    the limit, a malformed
    one ``400``; and the rest of what the client sends is read and dropped (a bounded amount,
    for a bounded time) before the connection closes, so the answer is not lost to a reset."""

    _draining = False
    _drained = 0
    _drain_timer: asyncio.TimerHandle | None = None
    _head_too_large = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_limit = self.config.h11_max_incomplete_event_size or HEAD_LIMIT_BYTES

    def send_400_response(self, msg: str) -> None:
        """Answer the refused request, half-close, and drain what still comes."""
        if self._head_too_large:
            status, text = 431, f"request head too large: at most {self.head_limit} bytes"
        else:
            status, text = 400, msg
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        for event in (
            h11.Response(
                status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode()
            ),
            h11.Data(data=text.encode("ascii")),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self._draining = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._drain_timer = asyncio.get_running_loop().call_later(_DRAIN_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        """Refuse a head past the limit (h11 alone lets one through that arrives whole);
        while draining a refused request, drop what comes (closing past the bound)."""
        if not self._draining:
            if self.conn.their_state is h11.IDLE and self._head_past_limit(data):
                self._head_too_large = True
                self.send_400_response("request head too large")
                return
            super().data_received(data)
            return
        self._drained += len(data)
        if self._drained > _DRAIN_BYTES:
            self.transport.close()

    def _head_past_limit(self, data: bytes) -> bool:
        pending = self.conn.trailing_data[0] + data if self.conn.trailing_data[0] else data
        # Within the limit when the blank line ending the head starts inside it.
        ends = pending.find(b"\r\n\r\n", 0, self.head_limit + 4) != -1
        return not ends and len(pending) > self.head_limit

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the drain's deadline with the connection."""
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().connection_lost(exc)


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
                http=RefusingH11Protocol,
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
