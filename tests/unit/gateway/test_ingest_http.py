"""The gateway over HTTP, in process: rejected requests never reach the event bus.

The app is called without its lifespan, so its bus is never started: any attempt to produce
would fail (500). A 400 or 401 here therefore also proves nothing was produced.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from starlette.applications import Starlette

from gateway.ingest import IngestApi
from gateway.settings import GatewaySettings
from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig
from tests.support.keys import SHARED_KEY, keyed_app

WRITE_KEY = "wk_test_12345"
API_KEY = SHARED_KEY  # a valid GraphQL key: still not an ingest credential
SETTINGS = GatewaySettings(write_key=WRITE_KEY)
EVENT = {"userId": "u-1", "event": "Order Completed", "properties": {"total": 10}}


def basic(username: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic(WRITE_KEY)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = keyed_app(SETTINGS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["message"]
    return error


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("wk_wrong_12345"),
        basic(API_KEY),
        {"Authorization": f"Bearer {WRITE_KEY}"},
        {"Authorization": "Basic ???"},
    ],
)
async def test_missing_or_wrong_write_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/track", json=EVENT, headers=headers)
    error = error_of(response, 401, "unauthorized")
    assert "write key" in error["message"]


async def test_write_key_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/batch", content=b"{not json", headers=basic("nope"))
    error_of(response, 401, "unauthorized")


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"userId": "u",}', b"\xff\xfe"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/v1/track", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    error = error_of(response, 400, "malformed_json")
    assert "not valid JSON" in error["message"]


async def test_missing_ids_is_400_with_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/track", json={"event": "e"}, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "userId"
    assert "anonymousId" in error["message"]


async def test_wrong_type_is_400_with_path(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/identify", json={"userId": "u", "traits": ["gold"]}, headers=AUTH
    )
    assert error_of(response, 400, "invalid_event")["path"] == "traits"


async def test_non_object_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/page", json=["userId"], headers=AUTH)
    assert error_of(response, 400, "invalid_event")["path"] == "body"


async def test_single_event_over_32_kb_is_400(client: httpx.AsyncClient) -> None:
    body = json.dumps({**EVENT, "properties": {"blob": "x" * (32 * 1024)}}).encode()
    assert len(body) > SETTINGS.max_event_bytes
    response = await client.post("/v1/track", content=body, headers=AUTH)
    error = error_of(response, 400, "payload_too_large")
    assert str(SETTINGS.max_event_bytes) in error["message"]


async def test_oversize_body_without_content_length_is_400(client: httpx.AsyncClient) -> None:
    chunk = b" " * 8 * 1024

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield chunk

    response = await client.post("/v1/track", content=chunks(), headers=AUTH)
    assert "content-length" not in response.request.headers
    error_of(response, 400, "payload_too_large")


async def test_declared_oversize_body_is_refused_before_reading(
    client: httpx.AsyncClient,
) -> None:
    # The Content-Length alone decides; the few bytes actually sent are never parsed.
    headers = {**AUTH, "Content-Length": str(SETTINGS.max_event_bytes + 1)}
    response = await client.post("/v1/track", content=b"{}", headers=headers)
    error_of(response, 400, "payload_too_large")


async def test_batch_over_500_kb_is_400(client: httpx.AsyncClient) -> None:
    item = {**EVENT, "type": "track", "properties": {"blob": "x" * 10_000}}
    body = json.dumps({"batch": [item] * 60}).encode()
    assert len(body) > SETTINGS.max_batch_bytes
    response = await client.post("/v1/batch", content=body, headers=AUTH)
    error = error_of(response, 400, "payload_too_large")
    assert str(SETTINGS.max_batch_bytes) in error["message"]


async def test_batch_with_one_bad_event_names_its_index(
    ingest_client: httpx.AsyncClient, bus: RecordingBus
) -> None:
    good = {**EVENT, "type": "track"}
    bad = {"type": "track", "userId": "u-1"}
    response = await ingest_client.post(
        "/v1/batch", json={"batch": [good, good, bad, good]}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    (rejected,) = response.json()["rejected"]
    assert rejected["index"] == 2
    assert rejected["path"] == "batch[2].event"
    assert rejected["message"].startswith("batch[2].event: ")
    assert len(bus.produced) == 3


async def test_batch_item_over_32_kb_names_its_index(client: httpx.AsyncClient) -> None:
    good = {**EVENT, "type": "track"}
    big = {**good, "properties": {"blob": "x" * (32 * 1024)}}
    response = await client.post("/v1/batch", json={"batch": [big, big]}, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "batch[0]"
    assert [r["path"] for r in response.json()["rejected"]] == ["batch[0]", "batch[1]"]


@pytest.mark.parametrize(
    ("body", "path"), [({"batch": []}, "batch"), ({"batch": {}}, "batch"), ([], "body")]
)
async def test_batch_shape_is_checked(client: httpx.AsyncClient, body: Any, path: str) -> None:
    response = await client.post("/v1/batch", json=body, headers=AUTH)
    assert error_of(response, 400, "invalid_event")["path"] == path


async def test_unknown_call_type_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/purchase", json=EVENT, headers=AUTH)
    assert response.status_code == 404


async def test_ingest_only_accepts_post(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/track", headers=AUTH)
    assert response.status_code == 405


async def test_valid_event_reaches_the_bus() -> None:
    # The control for every 400 above: without the lifespan a valid event does try to produce.
    transport = httpx.ASGITransport(app=keyed_app(SETTINGS), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/v1/track", json=EVENT, headers=AUTH)
    assert response.status_code == 500


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong_key_123"}, basic(API_KEY), {"Authorization": API_KEY}],
)
async def test_graphql_without_the_api_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
    assert response.status_code == 401
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "Bearer" in errors[0]["message"]


async def test_graphql_get_query_without_the_api_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


class RecordingBus(Bus):
    """A bus that keeps what it is asked to produce instead of talking to Kafka."""

    def __init__(self) -> None:
        super().__init__(BusConfig(bootstrap_servers="unused:9092", client_id="test"))
        self.produced: list[tuple[str, str | bytes | None, Message]] = []

    async def publish_many(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> None:
        self.produced.extend(records)


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
async def ingest_client(bus: RecordingBus) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=IngestApi(SETTINGS, bus).routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_accepted_event_is_produced_keyed_by_user(
    ingest_client: httpx.AsyncClient, bus: RecordingBus
) -> None:
    response = await ingest_client.post(
        "/v1/track", json={**EVENT, "messageId": "msg-1"}, headers=AUTH
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert len(bus.produced) == 1
    topic, key, message = bus.produced[0]
    assert topic == topics.EVENTS_RAW
    assert key == "u-1"
    assert isinstance(message, events_pb2.Event)
    assert message.message_id == "msg-1"
    assert message.event_id not in ("", "msg-1")
    assert message.type == events_pb2.EVENT_TYPE_TRACK


async def test_accepted_batch_is_produced_whole(
    ingest_client: httpx.AsyncClient, bus: RecordingBus
) -> None:
    batch = [
        {"type": "identify", "userId": "u-1", "traits": {"email": "a@b.io"}},
        {"type": "track", "anonymousId": "anon-2", "event": "Viewed"},
    ]
    response = await ingest_client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 200
    assert [key for _, key, _ in bus.produced] == ["u-1", "anon-2"]


async def test_rejected_batch_produces_nothing(
    ingest_client: httpx.AsyncClient, bus: RecordingBus
) -> None:
    batch = [{"type": "track", "userId": "u"}, {"type": "track", "userId": "u", "event": ""}]
    response = await ingest_client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert error_of(response, 400, "invalid_event")["path"] == "batch[0].event"
    assert bus.produced == []


async def test_deeply_nested_json_is_400_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/track", content=b"[" * 3000, headers=AUTH)
    error_of(response, 400, "malformed_json")


async def test_deeply_nested_properties_are_400_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    nested: dict[str, Any] = {}
    for _ in range(35):
        nested = {"n": nested}
    response = await client.post("/v1/track", json={**EVENT, "properties": nested}, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "properties"
    assert "nested deeper" in error["message"]


async def test_unexpected_resolver_errors_are_masked_with_a_code() -> None:
    from graphql import GraphQLError

    from gateway.errors import INTERNAL_SERVER_ERROR, MaskUnexpectedErrors

    mask = MaskUnexpectedErrors()
    fault = GraphQLError(
        "db password is hunter2", path=["customer"], original_error=RuntimeError("boom")
    )
    assert mask.should_mask_error(fault)
    masked = mask.anonymise_error(fault)
    assert masked.message == "internal error"
    assert masked.extensions == {"code": INTERNAL_SERVER_ERROR}
    coded = GraphQLError("bad", original_error=ValueError(), extensions={"code": "BAD_USER_INPUT"})
    assert not mask.should_mask_error(coded)
    assert not mask.should_mask_error(GraphQLError("Cannot query field 'x'"))
    # A variable that does not coerce fails before any resolver (no path): the client's
    # error, shown with a code.
    variable = GraphQLError("Variable '$kind' got invalid value", original_error=ValueError())
    assert not mask.should_mask_error(variable)
    assert mask._process_errors([variable])[0].extensions == {"code": "BAD_USER_INPUT"}
