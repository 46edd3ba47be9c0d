"""Times between Python and protobuf, the same way everywhere: UTC, unset when absent."""

from __future__ import annotations

from datetime import UTC, datetime
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
