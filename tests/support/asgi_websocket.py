"""A WebSocket client that speaks ASGI to an app directly (no network, no lifespan), for the
GraphQL door's WebSocket tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message

TRANSPORT_WS = "graphql-transport-ws"


async def _run(app: ASGIApp, scope: Any, peer: AsgiWebSocket) -> None:
    await app(scope, peer.to_app.get, peer.from_app.put)


class AsgiWebSocket:
    """One WebSocket connection to ``app`` at ``/graphql`` with ``headers``."""

    def __init__(
        self,
        app: ASGIApp,
        headers: dict[str, str] | None = None,
        subprotocol: str = TRANSPORT_WS,
    ) -> None:
        self.subprotocol = subprotocol
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("test", 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "query_string": b"",
            "headers": [*raw, (b"sec-websocket-protocol", subprotocol.encode())],
            "subprotocols": [subprotocol],
        }
        self.task: asyncio.Task[None] = asyncio.create_task(_run(app, scope, self))

    async def received(self) -> Message:
        """The next ASGI message the app sent (a hang guard, not a timing check)."""
        return await asyncio.wait_for(self.from_app.get(), 10)

    async def accepted(self) -> None:
        """Connect; the app must accept with the subprotocol asked for."""
        await self.to_app.put({"type": "websocket.connect"})
        accept = await self.received()
        assert accept["type"] == "websocket.accept", accept
        assert accept["subprotocol"] == self.subprotocol

    async def send_text(self, text: str) -> None:
        """A text frame to the app."""
        await self.to_app.put({"type": "websocket.receive", "text": text})

    async def send_json(self, message: Any) -> None:
        """A JSON text frame to the app."""
        await self.send_text(json.dumps(message))

    async def receive_json(self) -> Any:
        """The next message, which must be a text frame of JSON."""
        message = await self.received()
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def closed_with(self) -> int:
        """The close code of the next message, which must be a close."""
        message = await self.received()
        assert message["type"] == "websocket.close", message
        code: int = message["code"]
        return code

    async def close(self) -> None:
        """Disconnect and wait for the app to finish."""
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 10)
