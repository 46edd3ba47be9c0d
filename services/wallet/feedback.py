"""Wallet activity back into the profile: a registration or unregistration becomes a
``Wallet Pass Installed`` / ``Wallet Pass Removed`` track event on ``events.raw`` whose only
identifier is the pass serial (linked to the customer when the pass was issued), so
engagement and segments see who carries the card."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import common_pb2, events_pb2
from services.platform import topics
from services.platform.bus import Bus

INSTALLED = "Wallet Pass Installed"
REMOVED = "Wallet Pass Removed"
SOURCE = "wallet"


def pass_event(
    name: str, doc: Mapping[str, Any], device_id: str, reason: str, now: datetime
) -> events_pb2.Event:
    """The raw event saying a pass was installed on or removed from a device."""
    properties = Struct()
    properties.update(
        {
            "serial_number": doc["_id"],
            "pass_kind": doc["kind"],
            "platform": doc["platform"],
            "pass_type_id": doc.get("pass_type_id", ""),
            "device_id": device_id,
            **({"reason": reason} if reason else {}),
        }
    )
    stamp = Timestamp()
    stamp.FromDatetime(now)
    return events_pb2.Event(
        event_id=str(uuid.uuid4()),
        type=events_pb2.EVENT_TYPE_TRACK,
        name=name,
        identifiers=[common_pb2.Identifier(type="wallet_serial", value=doc["_id"])],
        properties=properties,
        timestamp=stamp,
        sent_at=stamp,
        received_at=stamp,
        source=SOURCE,
    )


class WalletFeedback:
    """Publishes installed / removed events, keyed by serial (one pass's events in order)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def installed(self, doc: Mapping[str, Any], device_id: str) -> None:
        """A phone registered for the pass."""
        event = pass_event(INSTALLED, doc, device_id, "", datetime.now(UTC))
        await self.bus.publish(topics.EVENTS_RAW, doc["_id"], event)

    async def removed(self, doc: Mapping[str, Any], device_id: str, reason: str = "") -> None:
        """A phone unregistered, or APNs says the device no longer has the pass."""
        event = pass_event(REMOVED, doc, device_id, reason, datetime.now(UTC))
        await self.bus.publish(topics.EVENTS_RAW, doc["_id"], event)
