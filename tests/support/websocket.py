"""A small graphql-transport-ws client over a real TCP socket (wsproto + asyncio streams),
for the e2e tests of the gateway's subscriptions. It answers WebSocket pings, can be told
not to read (a slow client: its socket's receive buffer is kept small), and reports the
close code the server sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

TRANSPORT_WS = "graphql-transport-ws"
# A hang guard for every wait, not a timing check.
WAIT_S = 30.0


@dataclass(frozen=True)
class Closed:
    """The server closed the WebSocket with this code and reason."""

    code: int
    reason: str


class WebSocketClient:
    """One client connection; ``receive`` returns parsed JSON messages or :class:`Closed`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._events: list[Event] = []
        self._text: list[str] = []
        self.accepted_subprotocol: str | None = None

    @classmethod
    async def connect(
        cls,
        http_url: str,
        path: str = "/graphql",
        subprotocols: tuple[str, ...] = (TRANSPORT_WS,),
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
    ) -> WebSocketClient:
        """Open the socket and complete the upgrade (fails if the server refuses it)."""
        url = urlsplit(http_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connecting, so the advertised window stays small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        limit = receive_buffer or 2**16
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        client = cls(reader, writer)
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await client._write(
            client.ws.send(
                Request(
                    host=f"{host}:{port}",
                    target=path,
                    subprotocols=list(subprotocols),
                    extra_headers=extra,
                )
            )
        )
        event = await client._next_event()
        if isinstance(event, RejectConnection):
            raise ConnectionRefusedError(f"upgrade refused with HTTP {event.status_code}")
        assert isinstance(event, AcceptConnection), event
        client.accepted_subprotocol = event.subprotocol
        return client

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _next_event(self) -> Event:
        while not self._events:
            chunk = await asyncio.wait_for(self.reader.read(65_536), WAIT_S)
            self.ws.receive_data(chunk or None)
            self._events.extend(self.ws.events())
            if not chunk and not self._events:
                raise ConnectionError("the server went away without closing")
        return self._events.pop(0)

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        await self._write(self.ws.send(TextMessage(data=text)))

    async def send_json(self, message: Any) -> None:
        """Send one JSON message."""
        await self.send_text(json.dumps(message))

    async def receive(self) -> Any:
        """The next message the server sent, parsed, or :class:`Closed`."""
        while True:
            event = await self._next_event()
            if isinstance(event, Ping):
                await self._write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                return Closed(event.code, event.reason or "")
            elif isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return json.loads(text)
            elif isinstance(event, BytesMessage):
                raise TypeError("the server sent a binary message")

    async def receive_json(self) -> dict[str, Any]:
        """The next message, which must not be a close."""
        message = await self.receive()
        assert not isinstance(message, Closed), message
        assert isinstance(message, dict), message
        return message

    async def closed(self) -> Closed:
        """The close the server sends next (messages before it are skipped)."""
        while True:
            message = await self.receive()
            if isinstance(message, Closed):
                return message

    async def init(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send connection_init; the server's answer (connection_ack)."""
        await self.send_json({"type": "connection_init", "payload": payload})
        return await self.receive_json()

    async def subscribe(self, id_: str, query: str, **variables: Any) -> None:
        """Start an operation."""
        payload = {"query": query, "variables": variables}
        await self.send_json({"id": id_, "type": "subscribe", "payload": payload})

    async def close(self) -> None:
        """Close the connection without waiting for the server's answer."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
