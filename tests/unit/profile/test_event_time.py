"""The profile never trusts an event time later than the event's receipt: a device clock far
ahead would otherwise win every trait and pin last seen for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.struct_pb2 import Struct

from lodestar.v1 import events_pb2
from services.platform.timestamps import CLOCK_ALLOWANCE, event_time
from services.profile.consumers import to_resolved_event
from services.profile.fold import fold, merge

NOW = datetime.now(UTC)
RECEIVED = NOW - timedelta(hours=1)
FAR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def identify(
    event_id: str, plan: str, timestamp: datetime | None, received: datetime | None
) -> events_pb2.Event:
    traits = Struct()
    traits.update({"plan": plan})
    event = events_pb2.Event(
        event_id=event_id,
        customer_id="cust-1",
        type=events_pb2.EVENT_TYPE_IDENTIFY,
        traits=traits,
    )
    if timestamp is not None:
        event.timestamp.FromDatetime(timestamp)
    if received is not None:
        event.received_at.FromDatetime(received)
    return event


def test_a_time_after_receipt_becomes_the_receipt() -> None:
    assert event_time(FAR, RECEIVED, NOW) == RECEIVED
    assert event_time(RECEIVED + timedelta(hours=2), RECEIVED, NOW) == RECEIVED


def test_a_little_ahead_of_receipt_is_kept() -> None:
    slightly = RECEIVED + CLOCK_ALLOWANCE
    assert event_time(slightly, RECEIVED, NOW) == slightly


def test_earlier_times_are_kept() -> None:
    earlier = RECEIVED - timedelta(days=30)
    assert event_time(earlier, RECEIVED, NOW) == earlier


def test_a_receipt_in_the_future_is_not_trusted_either() -> None:
    # An event produced by another path with a forged received_at.
    assert event_time(FAR, FAR, NOW) == NOW
    assert event_time(RECEIVED, FAR, NOW) == RECEIVED


def test_without_a_receipt_the_consumer_clock_bounds_it() -> None:
    assert event_time(FAR, None, NOW) == NOW
    assert event_time(RECEIVED, None, NOW) == RECEIVED


def test_the_kafka_translation_clamps_a_far_future_timestamp() -> None:
    resolved = to_resolved_event(identify("e-far", "frozen", FAR, RECEIVED))
    assert resolved.occurred_at == RECEIVED


def test_the_kafka_translation_clamps_a_forged_receipt() -> None:
    resolved = to_resolved_event(identify("e-far", "frozen", None, FAR))
    assert resolved.occurred_at <= datetime.now(UTC)


def test_a_far_future_event_cannot_freeze_a_trait_or_last_seen() -> None:
    future = to_resolved_event(identify("e-far", "frozen", FAR, RECEIVED))
    later = RECEIVED + timedelta(minutes=10)
    normal = to_resolved_event(identify("e-next", "silver", later, later))
    merged = merge([fold(future), fold(normal)])
    assert merged.set_traits == {"plan": "silver"}
    assert merged.trait_times["plan"] == later
    assert merged.last_seen == later
