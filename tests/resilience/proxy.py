"""A TCP proxy that makes a dependency slow or unreachable at run time, for the resilience
tests: clients connect to it instead of the server (MongoDB wire, Kafka wire, anything).

- ``fast()``: bytes pass as they come.
- ``slow(delay_s)``: each chunk waits ``delay_s`` before it is passed on (in order), so every
  request and every answer is late, as over a congested link.
- ``blackhole()``: connections are accepted and bytes are read, but nothing is passed on
  until the mode changes (held, as a partitioned network holds TCP retransmissions); then
  what was held goes through in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class ProxyStats:
    """What went through: connections opened and chunks passed on (both directions)."""

    connections: int = 0
    chunks: int = 0
    delayed_chunks: int = 0
    held_chunks: int = 0
    modes: list[str] = field(default_factory=list)


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` in the current mode."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.delay_s = 0.0
        self.stats = ProxyStats()
        self._open = asyncio.Event()  # set unless blackholed
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        """``fast``, ``slow`` or ``blackhole``."""
        if not self._open.is_set():
            return "blackhole"
        return "slow" if self.delay_s > 0 else "fast"

    def fast(self) -> None:
        """Pass bytes at once (and release what a blackhole held)."""
        self.delay_s = 0.0
        self._open.set()
        self.stats.modes.append("fast")

    def slow(self, delay_s: float) -> None:
        """Delay every chunk by ``delay_s`` seconds."""
        self.delay_s = delay_s
        self._open.set()
        self.stats.modes.append(f"slow {delay_s}")

    def blackhole(self) -> None:
        """Hold every byte until the mode changes."""
        self._open.clear()
        self.stats.modes.append("blackhole")

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            # Either side closing ends both directions (as a connection through a real
            # middlebox does).
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                return
            if not self._open.is_set():
                self.stats.held_chunks += 1
                await self._open.wait()
            if self.delay_s > 0:
                self.stats.delayed_chunks += 1
                await asyncio.sleep(self.delay_s)
            self.stats.chunks += 1
            writer.write(chunk)
            await writer.drain()
