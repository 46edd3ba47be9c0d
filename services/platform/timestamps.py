"""Times between Python and protobuf, the same way everywhere: UTC, unset when absent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(at: datetime | None) -> Timestamp | None:
    """A protobuf timestamp (``None`` leaves the field unset); naive times are UTC, as the
    database hands them back."""
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    return stamp


def field_time(message: Any, name: str) -> datetime | None:
    """A message's timestamp field as an aware UTC datetime, or ``None`` when unset."""
    if not message.HasField(name):
        return None
    at: datetime = getattr(message, name).ToDatetime(UTC)
    return at


# How far an event's own time may run ahead of its receipt (device clocks drift a little).
CLOCK_ALLOWANCE = timedelta(minutes=5)


def event_time(occurred_at: datetime, received_at: datetime | None, now: datetime) -> datetime:
    """The time a service goes by for an event: when it happened, but never later than when
    it was received (nor a receipt later than ``now``), give or take :data:`CLOCK_ALLOWANCE`.

    Events reach Kafka by other paths than the gateway's bounded door; one stamped in the far
    future would otherwise freeze last-write-wins traits, pin last-seen times and keep a
    customer "recently active" for good.
    """
    latest = now if received_at is None or received_at > now else received_at
    return occurred_at if occurred_at <= latest + CLOCK_ALLOWANCE else latest


def time_of(event: Any, now: datetime | None = None) -> datetime:
    """An ``Event``'s trusted time (see :func:`event_time`): its timestamp, else its receipt."""
    received = field_time(event, "received_at")
    occurred = field_time(event, "timestamp") or received or datetime.now(UTC)
    return event_time(occurred, received, now or datetime.now(UTC))
