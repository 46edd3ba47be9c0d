"""The stand-in kit: what every loopback stand-in of an outside service (APNs, Google Wallet)
needs besides the protocol it imitates. A log of the calls it received (indexes that keep
counting after a clear, appended as JSON lines to a file when asked), the ``?since=`` and
``DELETE`` halves of its ``/fake/...`` listing, a loopback socket bound before serving (so
port 0 gives a port known up front), and a process that serves until SIGTERM/SIGINT.

Stand-ins import nothing from the services they stand in for: they hold the protocol's values
themselves, so a wrong value in production fails the tests instead of agreeing with itself.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from starlette.requests import Request

Entry = TypeVar("Entry")


def received_at() -> str:
    """Now, as the stand-ins stamp what they receive (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CallLog(Generic[Entry]):
    """What a stand-in received, oldest first. Each entry gets the next index; indexes keep
    counting after :meth:`clear`, so a test's ``?since=<index>`` stays valid. With a
    ``log_path`` every entry is also appended to that file as one JSON line."""

    def __init__(self, as_json: Callable[[Entry], Any], log_path: Path | None = None) -> None:
        self.as_json = as_json
        self.log_path = log_path
        self.entries: list[Entry] = []
        self.next_index = 0

    def add(self, make: Callable[[int], Entry]) -> Entry:
        """Record the entry ``make`` builds from its index, and return it."""
        entry = make(self.next_index)
        self.next_index += 1
        self.entries.append(entry)
        if self.log_path is not None:
            with self.log_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(self.as_json(entry), default=str) + "\n")
        return entry

    def clear(self) -> int:
        """Forget the entries (not the index count); return how many were forgotten."""
        cleared = len(self.entries)
        self.entries.clear()
        return cleared

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def since_index(request: Request) -> int | None:
    """The ``?since=`` index of a listing request (0 when absent); ``None`` when it is not an
    integer, for the stand-in to answer 400 in its own service's error shape."""
    try:
        return int(request.query_params.get("since", "0"))
    except ValueError:
        return None


def bind_loopback(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), for the server to serve on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    on_signal: Callable[[], None] = lambda: None,
) -> None:
    """A stand-in as a process: start it, wait for SIGTERM or SIGINT, call ``on_signal``
    (to log), then stop it."""
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    await start()
    await signalled.wait()
    on_signal()
    await stop()
