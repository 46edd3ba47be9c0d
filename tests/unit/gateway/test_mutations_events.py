"""``track``, ``identify``, ``alias`` and ``setConsent`` in process: the events are built by
the same intake as the HTTP ingest API's (same ids, same topic), bad input is BAD_USER_INPUT
naming its JSON path with nothing produced, and a down bus is UNAVAILABLE."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from starlette.applications import Starlette

from gateway.ingest import IngestApi
from lodestar.v1 import events_pb2, profile_pb2
from services.platform import topics
from services.platform.errors import BusUnavailable
from tests.unit.gateway.mutation_support import (
    SETTINGS,
    WRITE_KEY,
    graphql,
    only_error,
    rpc_error,
)
from tests.unit.gateway.test_ingest_http import RecordingBus

TRACK = """
mutation($userId: String, $event: String!, $properties: JSON, $messageId: String,
         $timestamp: String, $context: JSON, $integrations: JSON) {
  track(userId: $userId, event: $event, properties: $properties, messageId: $messageId,
        timestamp: $timestamp, context: $context, integrations: $integrations) {
    accepted eventId messageId
  }
}
"""
IDENTIFY = """
mutation($userId: String, $anonymousId: String, $traits: JSON) {
  identify(userId: $userId, anonymousId: $anonymousId, traits: $traits) { accepted eventId }
}
"""
ALIAS = """
mutation($userId: String!, $previousId: String!) {
  alias(userId: $userId, previousId: $previousId) { accepted eventId }
}
"""
SET_CONSENT = """
mutation($id: ID!, $purpose: String!, $state: String!) {
  setConsent(customerId: $id, purpose: $purpose, state: $state) { purpose state source }
}
"""
CALL = {
    "userId": "u-1",
    "event": "Order Completed",
    "properties": {"total": 10, "items": [{"sku": "a"}]},
    "messageId": "m-1",
    "timestamp": "2024-05-01T10:00:00Z",
    "context": {"locale": "en-GB"},
    "integrations": {"All": True},
}


class NoServices:
    """The event mutations call no service."""


def produced_events(bus: RecordingBus) -> list[tuple[str, str | bytes | None, Message]]:
    return list(bus.produced)


async def test_track_produces_the_event_the_http_api_produces_for_the_same_call() -> None:
    bus = RecordingBus()
    body = await graphql(NoServices(), TRACK, CALL, bus=bus)
    assert "errors" not in body, body
    answer = body["data"]["track"]
    assert answer["accepted"] is True
    assert answer["messageId"] == "m-1"

    http_bus = RecordingBus()
    app = Starlette(routes=IngestApi(SETTINGS, http_bus).routes())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        response = await http.post("/v1/track", json=CALL, auth=(WRITE_KEY, ""))
    assert response.status_code == 200, response.text

    [(topic, key, event)] = bus.produced
    [(http_topic, http_key, http_event)] = http_bus.produced
    assert topic == http_topic == topics.EVENTS_RAW
    assert key == http_key == "u-1"
    assert isinstance(event, events_pb2.Event)
    assert isinstance(http_event, events_pb2.Event)
    # The same messageId and content are the same event, whichever door it came through.
    assert answer["eventId"] == event.event_id == http_event.event_id
    assert event.type == events_pb2.EVENT_TYPE_TRACK
    assert event.name == "Order Completed"
    assert event.timestamp.ToDatetime(UTC) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    for same in ("properties", "context", "integrations", "identifiers", "source"):
        assert getattr(event, same) == getattr(http_event, same), same


async def test_identify_and_alias_produce_their_events() -> None:
    bus = RecordingBus()
    body = await graphql(
        NoServices(), IDENTIFY, {"anonymousId": "a-1", "traits": {"plan": "gold"}}, bus=bus
    )
    assert "errors" not in body, body
    body = await graphql(NoServices(), ALIAS, {"userId": "u-1", "previousId": "a-1"}, bus=bus)
    assert "errors" not in body, body
    identify, alias = (event for _, _, event in bus.produced)
    assert isinstance(identify, events_pb2.Event)
    assert isinstance(alias, events_pb2.Event)
    assert identify.type == events_pb2.EVENT_TYPE_IDENTIFY
    assert identify.traits["plan"] == "gold"
    assert alias.type == events_pb2.EVENT_TYPE_ALIAS
    assert alias.previous_id == "a-1"


# (change to the call, JSON path of the bad part, words in the message)
BAD_CALLS: list[tuple[dict[str, Any], str, str]] = [
    ({"properties": {"a\u0000b": 1}}, '$.properties["a\\u0000b"]', "NUL"),
    ({"properties": {"p": "\ud800"}}, "$.properties.p", "surrogate"),
    ({"properties": {"n": float("nan")}}, "$.properties.n", "finite number"),
    ({"event": "Order\u0000Completed"}, "$.event", "NUL"),
    ({"event": "x" * 5_000}, "$.event", "longer than"),
    ({"userId": None}, "$.userId", "userId or anonymousId"),
    ({"userId": "u" * 600}, "$.userId", "longer than"),
    ({"timestamp": "yesterday"}, "$.timestamp", "ISO-8601"),
    ({"timestamp": "9999-01-01T00:00:00Z"}, "$.timestamp", "after"),
    ({"messageId": "m" * 200}, "$.messageId", "longer than"),
    ({"properties": [1, 2]}, "$.properties", "must be an object"),
    ({"properties": "text"}, "$.properties", "must be an object"),
    ({"integrations": {"x": "y" * 9_000}}, "$.integrations", "larger than"),
    ({"context": {"externalIds": "nope"}}, "$.context.externalIds", ""),
    # Larger than an HTTP call may be (LODESTAR_MAX_EVENT_BYTES).
    ({"properties": {"blob": "x" * 40_000}}, "$", "larger than"),
]


@pytest.mark.parametrize(("change", "path", "words"), BAD_CALLS)
async def test_bad_input_is_bad_user_input_naming_its_path_and_nothing_is_produced(
    change: dict[str, Any], path: str, words: str
) -> None:
    bus = RecordingBus()
    body = await graphql(NoServices(), TRACK, {**CALL, **change}, bus=bus)
    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["path"] == path, error
    assert words in error["message"]
    assert len(error["message"]) <= 300
    assert "\u0000" not in error["message"]
    assert body["data"] is None
    assert bus.produced == []


async def test_wrong_types_are_refused_before_anything_runs() -> None:
    bus = RecordingBus()
    body = await graphql(NoServices(), TRACK, {**CALL, "event": 5}, bus=bus)
    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    body = await graphql(NoServices(), TRACK, {**CALL, "event": None}, bus=bus)
    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert bus.produced == []


class DownBus(RecordingBus):
    async def publish_many(self, records: Any) -> None:
        raise BusUnavailable("no broker")


async def test_a_down_event_bus_is_unavailable() -> None:
    body = await graphql(NoServices(), TRACK, CALL, bus=DownBus())
    error = only_error(body)
    assert error["extensions"]["code"] == "UNAVAILABLE" or (
        error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    )
    assert "retry" in error["message"]


class FakeProfile:
    def __init__(self, error: grpc.aio.AioRpcError | None = None) -> None:
        self.error = error
        self.requests: list[profile_pb2.SetConsentRequest] = []

    async def SetConsent(  # noqa: N802 - fakes carry the RPC names
        self, request: profile_pb2.SetConsentRequest
    ) -> profile_pb2.Profile:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return profile_pb2.Profile(
            customer_id=request.customer_id,
            consent=[
                profile_pb2.ConsentState(
                    purpose=request.purpose, state=request.state, source=request.source
                )
            ],
        )


class ProfileClients:
    def __init__(self, profile: FakeProfile) -> None:
        self.profile = profile


async def test_set_consent_answers_the_customers_consent() -> None:
    profile = FakeProfile()
    variables = {"id": "c-1", "purpose": "email_marketing", "state": "granted"}
    body = await graphql(ProfileClients(profile), SET_CONSENT, variables)
    assert "errors" not in body, body
    assert body["data"]["setConsent"] == [
        {"purpose": "email_marketing", "state": "granted", "source": "graphql"}
    ]
    assert profile.requests[0].customer_id == "c-1"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_INPUT"),
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    ],
)
async def test_set_consent_errors_keep_their_codes(status: grpc.StatusCode, code: str) -> None:
    profile = FakeProfile(rpc_error(status, "purpose: must be one of email_marketing, ..."))
    variables = {"id": "c-1", "purpose": "spam", "state": "granted"}
    error = only_error(await graphql(ProfileClients(profile), SET_CONSENT, variables))
    assert error["extensions"]["code"] == code


async def test_set_consent_with_text_protobuf_cannot_carry_is_bad_user_input() -> None:
    profile = FakeProfile()
    variables = {"id": "c-\ud800", "purpose": "email_marketing", "state": "granted"}
    error = only_error(await graphql(ProfileClients(profile), SET_CONSENT, variables))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert profile.requests == []
