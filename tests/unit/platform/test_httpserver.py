"""uvicorn without its signal handlers: it serves in the caller's loop, leaves SIGTERM to the
owner, names itself when its port is taken, and stops when told."""

from __future__ import annotations

import asyncio
import signal
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from infra.local.standin import bind_loopback
from services.platform.httpserver import HEAD_LIMIT_BYTES, QuietUvicorn


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


def _raw_exchange(port: int, head: bytes) -> bytes:
    """Send ``head`` whole over a plain socket, then read the answer to the end; a reset
    (the answer lost) raises."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        answer = b""
        while chunk := conn.recv(65_536):
            answer += chunk
    return answer


async def test_an_oversized_request_head_is_answered_431_not_reset() -> None:
    sock = bind_loopback("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = QuietUvicorn(APP, name="the test server", sock=sock, lifespan="off")
    await server.start()
    try:
        # Far past the head limit, and past what one read takes: without reading the rest
        # before closing, the kernel resets the connection and the answer is lost.
        token = "x" * (4 * 1024 * 1024)
        head = f"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: ApplePass {token}\r\n\r\n".encode()
        for _ in range(3):
            answer = await asyncio.to_thread(_raw_exchange, port, head)
            status, _, rest = answer.partition(b"\r\n")
            assert status == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:200]
            assert f"at most {HEAD_LIMIT_BYTES} bytes".encode() in rest
            assert b"connection: close" in rest.lower()
        # A malformed head is a 400 that says so, also without a reset.
        answer = await asyncio.to_thread(_raw_exchange, port, b"NOT HTTP\r\n\r\n" + b"y" * 10**6)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:200]
        # Still serving; a head just inside the limit, and a large body, are read as ever.
        async with httpx.AsyncClient() as http:
            near = {"X-Pad": "p" * (HEAD_LIMIT_BYTES - 200)}
            assert (await http.get(f"http://127.0.0.1:{port}/", headers=near)).text == "hello"
            body = b"b" * (2 * 1024 * 1024)
            posted = await http.post(f"http://127.0.0.1:{port}/", content=body)
            assert posted.status_code == 405  # the route takes GET only: the body was read
    finally:
        await server.stop()
