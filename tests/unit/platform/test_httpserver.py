"""uvicorn without its signal handlers: it serves in the caller's loop, leaves SIGTERM to the
owner, names itself when its port is taken, and stops when told."""

from __future__ import annotations

import signal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from infra.local.standin import bind_loopback
from services.platform.httpserver import QuietUvicorn


async def _hello(_: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", _hello)])


async def test_it_serves_on_a_bound_socket_and_leaves_the_signals_alone() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    sock = bind_loopback("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = QuietUvicorn(APP, name="the test server", sock=sock, lifespan="off")
    await server.start()
    try:
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/")
        assert answer.text == "hello"
    finally:
        await server.stop()
    assert server.task is None
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_taken_port_is_an_error_naming_the_server() -> None:
    taken = bind_loopback("127.0.0.1", 0)
    taken.listen()
    try:
        server = QuietUvicorn(
            APP, name="the busy server", host="127.0.0.1", port=taken.getsockname()[1]
        )
        with pytest.raises(RuntimeError, match="the busy server could not start"):
            await server.start()
    finally:
        taken.close()
