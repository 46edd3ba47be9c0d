"""Event ids at the door: a retried call dedupes, but a messageId never makes a different call
(another customer's, say) the same event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.segment import parse_batch, parse_call
from lodestar.v1 import events_pb2

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CALL: dict[str, Any] = {
    "userId": "u-1",
    "anonymousId": "anon-1",
    "event": "Order Completed",
    "messageId": "msg-1",
    "properties": {"total": 42.5, "items": [1, 2]},
    "traits": {"plan": "gold"},
    "context": {"ip": "10.0.0.1", "traits": {"email": "a@b.io"}},
    "timestamp": "2024-05-01T11:00:00Z",
    "sentAt": "2024-05-01T11:00:05Z",
}


def event_of(
    call: dict[str, Any], kind: str = "track", received: datetime = RECEIVED
) -> events_pb2.Event:
    return parse_call(call, kind, received)[1]


def test_the_client_message_id_is_kept() -> None:
    assert event_of(CALL).message_id == "msg-1"


def test_the_event_id_is_not_the_message_id_but_a_uuid() -> None:
    event_id = event_of(CALL).event_id
    assert event_id != "msg-1"
    assert str(uuid.UUID(event_id)) == event_id


def test_a_retried_call_is_the_same_event() -> None:
    # SDKs restamp sentAt on every retry, and each retry is received at another time.
    first = event_of(CALL)
    retry = event_of(
        {**CALL, "sentAt": "2024-05-01T11:03:05Z"}, received=RECEIVED + timedelta(minutes=3)
    )
    assert retry.event_id == first.event_id


def test_a_retry_without_sent_at_is_the_same_event() -> None:
    assert event_of({**CALL, "sentAt": None}).event_id == event_of(CALL).event_id


def test_key_order_does_not_matter() -> None:
    reordered = dict(reversed(list(CALL.items())))
    reordered["properties"] = {"items": [1, 2], "total": 42.5}
    assert event_of(reordered).event_id == event_of(CALL).event_id


@pytest.mark.parametrize(
    "change",
    [
        {"userId": "u-2"},
        {"anonymousId": "anon-2"},
        {"anonymousId": None},
        {"event": "Order Updated"},
        {"properties": {"total": 42.5, "items": [1, 3]}},
        {"properties": None},
        {"traits": {"plan": "silver"}},
        {"traits": {"plan": "gold", "email": "c@d.io"}},
        {"context": {"ip": "10.0.0.2", "traits": {"email": "a@b.io"}}},
        {"context": {"ip": "10.0.0.1", "traits": {"email": "x@y.io"}}},
        {"context": {**CALL["context"], "externalIds": [{"type": "loyalty_number", "id": "L1"}]}},
        {"timestamp": "2024-05-01T11:00:01Z"},
        {"timestamp": None, "originalTimestamp": "2024-05-01T11:00:00Z"},
    ],
)
def test_a_different_call_under_a_known_message_id_is_a_new_event(change: dict[str, Any]) -> None:
    other = event_of({**CALL, **change})
    assert other.message_id == "msg-1"
    assert other.event_id != event_of(CALL).event_id


def test_the_call_type_is_part_of_the_content() -> None:
    call = {"userId": "u-1", "messageId": "m", "name": "Home"}
    assert event_of(call, "page").event_id != event_of(call, "screen").event_id


@pytest.mark.parametrize(
    ("kind", "field", "values"),
    [("alias", "previousId", ("anon-1", "anon-2")), ("group", "groupId", ("g-1", "g-2"))],
)
def test_previous_id_and_group_id_are_part_of_the_content(
    kind: str, field: str, values: tuple[str, str]
) -> None:
    first, second = (
        event_of({"userId": "u-1", "messageId": "m", field: value}, kind) for value in values
    )
    assert first.event_id != second.event_id


def test_another_user_reusing_a_message_id_gets_another_event() -> None:
    # The write key is public: a stranger's identify carrying a known messageId must not
    # become the victim's event (identity derives customer ids from event ids).
    victim = event_of({"userId": "victim", "messageId": "m-1"}, "identify")
    stranger = event_of({"userId": "stranger", "messageId": "m-1"}, "identify")
    assert victim.event_id != stranger.event_id


def test_without_message_id_every_call_is_new() -> None:
    call = {key: value for key, value in CALL.items() if key != "messageId"}
    first, second = event_of(call), event_of(call)
    assert first.event_id != second.event_id
    assert first.message_id == second.message_id == ""


def test_a_batch_item_is_the_same_event_as_the_same_call_sent_alone() -> None:
    ((_, alone),) = parse_batch({"batch": [{**CALL, "type": "track"}]}, RECEIVED, 32 * 1024)
    assert alone.event_id == event_of(CALL).event_id
    assert alone.message_id == "msg-1"


def test_a_batch_retried_with_a_new_sent_at_dedupes() -> None:
    item = {key: value for key, value in CALL.items() if key != "sentAt"} | {"type": "track"}
    first = parse_batch({"batch": [item], "sentAt": "2024-05-01T11:00:05Z"}, RECEIVED, 32 * 1024)
    retry = parse_batch(
        {"batch": [item], "sentAt": "2024-05-01T11:09:05Z"},
        RECEIVED + timedelta(minutes=9),
        32 * 1024,
    )
    assert first[0][1].event_id == retry[0][1].event_id
