"""Small hostile bodies on every ingest endpoint: each is a 400 naming the bad field, never a
500, and nothing reaches the event bus; a 200 means every store downstream can hold it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from gateway.ingest import IngestApi
from tests.unit.gateway.test_ingest_http import AUTH, SETTINGS, RecordingBus, error_of

# One valid call per endpoint; the cases below spoil one part of it.
CALLS: dict[str, dict[str, Any]] = {
    "identify": {"userId": "u-1", "traits": {"plan": "gold"}},
    "track": {"userId": "u-1", "event": "Order Completed", "properties": {"total": 10}},
    "page": {"userId": "u-1", "name": "Home"},
    "screen": {"userId": "u-1", "name": "Cart"},
    "alias": {"userId": "u-1", "previousId": "anon-1"},
    "group": {"userId": "u-1", "groupId": "g-1"},
}
ENDPOINTS = [*CALLS, "batch"]


def deep(levels: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``levels`` nested arrays."""
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def body_for(endpoint: str, change: dict[str, Any]) -> tuple[bytes, str]:
    """The endpoint's valid call with ``change`` merged in, as JSON (lone surrogates and
    NaN written the way Python's encoder writes them), and the path prefix of its fields."""
    if endpoint == "batch":
        item = {"type": "track", **CALLS["track"], **change}
        return json.dumps({"batch": [item]}).encode(), "batch[0]."
    return json.dumps({**CALLS[endpoint], **change}).encode(), ""


# (change to the call, path of the bad field without the batch prefix, words in the message)
BAD_FIELDS: list[tuple[dict[str, Any], str, str]] = [
    # Lone surrogates, in values and keys, at any depth.
    ({"properties": {"p": "\ud800"}}, "properties.p", "surrogate"),
    ({"properties": {"p": "ok\udfffok"}}, "properties.p", "surrogate"),
    ({"traits": {"\udfff": 1}}, 'traits["\\udfff"]', "surrogate"),
    ({"context": {"a": [{"b": ["x", "\ud800"]}]}}, "context.a[0].b[1]", "surrogate"),
    ({"context": {"a": {"\ud800k": 1}}}, 'context.a["\\ud800k"]', "surrogate"),
    ({"userId": "u\ud800"}, "userId", "surrogate"),
    ({"messageId": "\udc00"}, "messageId", "surrogate"),
    ({"extra": {"\ud800": "\ud800"}}, 'extra["\\ud800"]', "surrogate"),
    # Nesting far beyond the limit in a few hundred bytes, wherever it is.
    ({"properties": {"p": deep(400)}}, "properties", "nested deeper than 20"),
    ({"traits": {"t": deep(400)}}, "traits", "nested deeper than 20"),
    ({"context": {"device": deep(400)}}, "context", "nested deeper than 20"),
    ({"userId": deep(400, "u")}, "userId", "nested deeper than 20"),
    ({"unknownField": deep(400)}, "unknownField", "nested deeper than 20"),
    # Event times no datetime or protobuf Timestamp can hold.
    ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp", "out of range"),
    ({"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp", "out of range"),
    ({"originalTimestamp": "0001-01-01T00:00:00+14:00"}, "originalTimestamp", "out of range"),
    ({"originalTimestamp": "9999-12-31T23:59:59-14:00"}, "originalTimestamp", "out of range"),
    ({"sentAt": "0001-01-01T00:00:00+14:00"}, "sentAt", "out of range"),
    ({"sentAt": "9999-12-31T23:59:59-14:00"}, "sentAt", "out of range"),
    # Numbers that cannot be stored: JSON's NaN/Infinity extensions, overflowing floats, and
    # integers too large for any number type (some too long even to convert).
    ({"properties": {"n": float("nan")}}, "properties.n", "finite number"),
    ({"properties": {"n": [float("inf")]}}, "properties.n[0]", "finite number"),
    ({"traits": {"n": float("-inf")}}, "traits.n", "finite number"),
    ({"context": {"n": 10**400}}, "context.n", "finite number"),
    ({"properties": {"n": -(10**400)}}, "properties.n", "finite number"),
    # Wrong types where the type decides what happens next.
    ({"timestamp": ["2024-01-01T00:00:00Z"]}, "timestamp", "must be a string"),
    (
        {"context": {"externalIds": [{"type": ["x" * 5000], "id": "1"}]}},
        "context.externalIds[0].type",
        "must be a string",
    ),
    # What MongoDB cannot hold: NUL in names and keys (and so in any string: values like
    # order ids become keys), and empty trait names (a trait's key is its field name).
    ({"event": "Order\u0000Completed"}, "event", "NUL"),
    ({"properties": {"a\u0000b": 1}}, 'properties["a\\u0000b"]', "NUL"),
    ({"properties": {"order_id": "o\u00001"}}, "properties.order_id", "NUL"),
    ({"traits": {"p": {"\u0000": 1}}}, 'traits.p["\\u0000"]', "NUL"),
    ({"context": {"\u0000": 1}}, 'context["\\u0000"]', "NUL"),
    ({"context": {"traits": {"x\u0000": 1}}}, 'context.traits["x\\u0000"]', "NUL"),
    ({"anonymousId": "a\u0000"}, "anonymousId", "NUL"),
    ({"traits": {"": "gold"}}, 'traits[""]', "empty"),
    ({"context": {"traits": {"": "gold"}}}, 'context.traits[""]', "empty"),
    # Client clocks: far future, or before the platform's epoch.
    ({"timestamp": "9999-01-01T00:00:00Z"}, "timestamp", "after"),
    ({"originalTimestamp": "2999-01-01T00:00:00Z"}, "originalTimestamp", "after"),
    ({"timestamp": "1970-01-01T00:00:00Z"}, "timestamp", "2000-01-01"),
]


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
async def ingest(bus: RecordingBus) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=IngestApi(SETTINGS, bus).routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def plain(text: str) -> bool:
    """A response string must be short and plain: no NUL nor lone surrogate echoed back."""
    return len(text) <= 300 and text.isprintable()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("change", "path", "words"), BAD_FIELDS)
async def test_bad_field_is_400_naming_it_and_nothing_is_produced(
    ingest: httpx.AsyncClient,
    bus: RecordingBus,
    endpoint: str,
    change: dict[str, Any],
    path: str,
    words: str,
) -> None:
    content, prefix = body_for(endpoint, change)
    response = await ingest.post(
        f"/v1/{endpoint}", content=content, headers={**AUTH, "Content-Type": "application/json"}
    )
    error = error_of(response, 400, "invalid_event")
    assert plain(error["message"]), error
    assert plain(error["path"]), error
    if path:
        assert error["path"] == prefix + path
        assert error["message"].startswith(f"{prefix}{path}: ")
    assert words in error["message"]
    assert bus.produced == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_raw_utf8_surrogate_bytes_are_400(
    ingest: httpx.AsyncClient, bus: RecordingBus, endpoint: str
) -> None:
    # A surrogate encoded straight into the bytes (CESU-8), not as a \\u escape.
    content, prefix = body_for(endpoint, {"properties": {"p": "SURROGATE"}})
    content = content.replace(b"SURROGATE", b"\xed\xa0\x80")
    response = await ingest.post(f"/v1/{endpoint}", content=content, headers=AUTH)
    # JSON's bytes decoding lets surrogates through, so it is the value check that refuses it.
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == f"{prefix}properties.p"
    assert bus.produced == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("digits", [400, 5_000])
async def test_integer_too_long_to_convert_is_400_naming_it(
    ingest: httpx.AsyncClient, bus: RecordingBus, endpoint: str, digits: int
) -> None:
    content, prefix = body_for(endpoint, {"properties": {"n": 0}})
    content = content.replace(b'"n": 0', b'"n": ' + b"7" * digits)
    response = await ingest.post(f"/v1/{endpoint}", content=content, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == f"{prefix}properties.n"
    assert bus.produced == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
async def test_json_non_finite_number_literals_are_400(
    ingest: httpx.AsyncClient, bus: RecordingBus, endpoint: str, constant: bytes
) -> None:
    content, prefix = body_for(endpoint, {"properties": {"n": 0}})
    content = content.replace(b'"n": 0', b'"n": ' + constant)
    response = await ingest.post(f"/v1/{endpoint}", content=content, headers=AUTH)
    assert error_of(response, 400, "invalid_event")["path"] == f"{prefix}properties.n"
    assert bus.produced == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_nesting_too_deep_to_parse_is_400_naming_the_field(
    ingest: httpx.AsyncClient, bus: RecordingBus, endpoint: str
) -> None:
    # Deeper than the JSON parser can recurse: still a 400, still naming the field.
    content, prefix = body_for(endpoint, {"properties": {"p": 0}})
    content = content.replace(b'"p": 0', b'"p": ' + b"[" * 5_000 + b"]" * 5_000)
    assert len(content) < 11_000
    response = await ingest.post(f"/v1/{endpoint}", content=content, headers=AUTH)
    error = error_of(response, 400, "malformed_json")
    assert error["path"] == f"{prefix}properties"
    assert "nested deeper" in error["message"]
    assert bus.produced == []


@pytest.mark.parametrize("kind", [["track"], {"track": 1}, 1, None, ""])
async def test_batch_item_type_of_the_wrong_type_is_400(
    ingest: httpx.AsyncClient, bus: RecordingBus, kind: Any
) -> None:
    content = json.dumps({"batch": [{**CALLS["track"], "type": kind}]}).encode()
    response = await ingest.post("/v1/batch", content=content, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "batch[0].type"
    assert "must be one of" in error["message"]
    assert bus.produced == []


async def test_batch_level_fields_are_checked_too(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    item = {"type": "track", **CALLS["track"]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"context": {"k": "\ud800"}}, "context.k"),
        ({"context": {"k": deep(400)}}, "context"),
        ({"sentAt": "9999-12-31T23:59:59-14:00"}, "sentAt"),
        ({"extra": deep(400)}, "extra"),
        ({"extra": float("nan")}, "extra"),
    ]
    for extra, path in cases:
        content = json.dumps({"batch": [item], **extra}).encode()
        response = await ingest.post("/v1/batch", content=content, headers=AUTH)
        assert error_of(response, 400, "invalid_event")["path"] == path
    deeper = b'{"batch": [' + b"[" * 5_000 + b"]" * 5_000 + b"]}"
    response = await ingest.post("/v1/batch", content=deeper, headers=AUTH)
    assert error_of(response, 400, "malformed_json")["path"] == "batch[0]"
    assert bus.produced == []


async def test_keys_a_store_can_hold_are_accepted(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    # '.' and '$' are escaped or held as data by every store; they are not refused.
    properties = {"a.b": 1, "$x": {"$y": 2, "c.d": [3]}, "": 4, "é": "ü", "n": 2**62}
    call = {**CALLS["identify"], "traits": {"$plan": "gold", "a.b": 1}, "properties": properties}
    response = await ingest.post("/v1/identify", json=call, headers=AUTH)
    assert response.status_code == 200, response.text
    assert len(bus.produced) == 1


def now_iso(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + delta).isoformat()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_sent_at_corrects_a_skewed_clock_instead_of_refusing_it(
    ingest: httpx.AsyncClient, bus: RecordingBus, endpoint: str
) -> None:
    # A device a year ahead: the call's sentAt shows the skew, which is taken out.
    ahead = timedelta(days=365)
    change = {"timestamp": now_iso(ahead - timedelta(minutes=5)), "sentAt": now_iso(ahead)}
    content, _ = body_for(endpoint, change)
    response = await ingest.post(f"/v1/{endpoint}", content=content, headers=AUTH)
    assert response.status_code == 200, response.text
    (_, _, event), *_ = bus.produced
    timestamp = event.timestamp.ToDatetime(UTC)  # type: ignore[attr-defined]
    received = event.received_at.ToDatetime(UTC)  # type: ignore[attr-defined]
    assert received - timedelta(minutes=6) < timestamp < received - timedelta(minutes=4)


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers, so the test owns its lifetime."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@pytest.fixture
async def served(bus: RecordingBus) -> AsyncIterator[str]:
    """The ingest API on a real socket (uvicorn, HTTP/1.1 keep-alive)."""
    app = Starlette(routes=IngestApi(SETTINGS, bus).routes())
    # Listening before uvicorn starts: connections wait in the backlog until it accepts them.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = QuietServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    sock.close()


def client_address(response: httpx.Response) -> Any:
    """The client side of the TCP connection that carried ``response``."""
    stream = response.extensions["network_stream"]
    get: Callable[[str], Any] = stream.get_extra_info
    address = get("client_addr")
    assert address is not None
    return address


async def test_connection_keeps_working_after_a_400(served: str, bus: RecordingBus) -> None:
    bad = [
        json.dumps({**CALLS["track"], "properties": {"p": "\ud800"}}).encode(),
        json.dumps({**CALLS["track"], "properties": {"p": deep(400)}}).encode(),
        json.dumps({**CALLS["track"], "timestamp": "9999-12-31T23:59:59-14:00"}).encode(),
        b'{"userId": "u-1", "event": "e", "p": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    ]
    async with httpx.AsyncClient(base_url=served) as http:
        first = await http.post("/v1/track", json=CALLS["track"], headers=AUTH)
        assert first.status_code == 200
        for content in bad:
            response = await http.post("/v1/track", content=content, headers=AUTH)
            assert response.status_code == 400, response.text
            assert client_address(response) == client_address(first)
        last = await http.post("/v1/track", json=CALLS["track"], headers=AUTH)
        assert last.status_code == 200
        assert client_address(last) == client_address(first)
    assert len(bus.produced) == 2
