"""The raw-event translation hands the resolver an alias call's previous id, and only that."""

from __future__ import annotations

from lodestar.v1 import common_pb2, events_pb2
from services.identity.consumers import event_identifiers


def call(kind: events_pb2.EventType.ValueType) -> events_pb2.Event:
    return events_pb2.Event(
        event_id="e-1",
        type=kind,
        identifiers=[common_pb2.Identifier(type="user_id", value="u-1")],
        previous_id="anon-1",
    )


def test_an_alias_call_carries_its_previous_id() -> None:
    assert event_identifiers(call(events_pb2.EVENT_TYPE_ALIAS)).previous_id == "anon-1"


def test_other_calls_never_link_a_previous_id() -> None:
    assert event_identifiers(call(events_pb2.EVENT_TYPE_TRACK)).previous_id == ""
