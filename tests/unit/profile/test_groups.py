"""Group calls: their traits are the group's, never the customer's; the change they make."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.struct_pb2 import Struct

from lodestar.v1 import events_pb2
from services.profile.consumers import to_resolved_event
from services.profile.fold import fold
from services.profile.groups import GroupChange, group_change

WHEN = datetime(2026, 3, 1, 12, tzinfo=UTC)


def call(
    kind: events_pb2.EventType.ValueType = events_pb2.EVENT_TYPE_GROUP,
    group_id: str = "acme",
) -> events_pb2.Event:
    traits, context = Struct(), Struct()
    traits.update({"name": "Acme Inc", "industry.sector": "tools", "employees": 120})
    context.update({"traits": {"plan": "gold"}})
    event = events_pb2.Event(
        event_id="e-1",
        customer_id="c-1",
        type=kind,
        group_id=group_id,
        traits=traits,
        context=context,
        source="web",
    )
    event.timestamp.FromDatetime(WHEN)
    event.received_at.FromDatetime(WHEN)
    return event


def test_group_traits_never_become_the_customers_traits() -> None:
    event = to_resolved_event(call())
    assert event.kind == "group"
    assert event.traits == {"plan": "gold"}  # context.traits still describe the user
    assert fold(event).set_traits == {"plan": "gold"}
    assert event.group_traits == {"name": "Acme Inc", "industry.sector": "tools", "employees": 120}


def test_a_group_call_links_the_customer_and_sets_the_groups_traits() -> None:
    assert group_change(to_resolved_event(call())) == GroupChange(
        event_id="e-1",
        group_id="acme",
        customer_id="c-1",
        traits={"name": "Acme Inc", "industry%2Esector": "tools", "employees": 120},
        at=WHEN,
    )


def test_only_group_calls_with_a_usable_id_change_a_group() -> None:
    assert group_change(to_resolved_event(call(events_pb2.EVENT_TYPE_IDENTIFY))) is None
    assert group_change(to_resolved_event(call(group_id=""))) is None
    assert group_change(to_resolved_event(call(group_id="g" * 513))) is None


def test_identify_traits_stay_the_customers() -> None:
    event = to_resolved_event(call(events_pb2.EVENT_TYPE_IDENTIFY))
    assert event.traits["name"] == "Acme Inc"
    assert event.group_id == ""
    assert event.group_traits == {}
