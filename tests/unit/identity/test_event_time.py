"""Identity's event time (last seen of identifiers) never runs ahead of the consumer's clock:
a forged receipt time would otherwise pin last seen for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lodestar.v1 import common_pb2, events_pb2
from services.identity.consumers import event_identifiers
from services.identity.graph import needs_write
from services.platform.timestamps import CLOCK_ALLOWANCE

FAR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def raw(received: datetime | None) -> events_pb2.Event:
    event = events_pb2.Event(
        event_id="e-1",
        type=events_pb2.EVENT_TYPE_TRACK,
        identifiers=[common_pb2.Identifier(type="user_id", value="u-1")],
        source="test",
    )
    if received is not None:
        event.received_at.FromDatetime(received)
    return event


def whole_ms(moment: datetime) -> datetime:
    """``moment`` at the millisecond precision identity keeps (as MongoDB does)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_the_receipt_time_is_used() -> None:
    received = whole_ms(datetime.now(UTC) - timedelta(hours=3))
    assert event_identifiers(raw(received)).at == received


def test_a_slightly_early_consumer_clock_keeps_the_receipt() -> None:
    received = whole_ms(datetime.now(UTC) + CLOCK_ALLOWANCE / 2)
    assert event_identifiers(raw(received)).at == received


def test_a_far_future_receipt_is_clamped_to_now() -> None:
    before = whole_ms(datetime.now(UTC))
    at = event_identifiers(raw(FAR)).at
    assert before <= at <= datetime.now(UTC)


def test_a_far_future_event_cannot_pin_last_seen() -> None:
    pinned = event_identifiers(raw(FAR)).at
    later = event_identifiers(raw(datetime.now(UTC) + timedelta(seconds=1))).at
    # Last seen moves forward on a later normal event (here at any resolution).
    assert later > pinned
    assert needs_write(pinned, later, timedelta(0))
