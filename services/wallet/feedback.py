"""Wallet activity back into the profile: a registration or unregistration becomes a
``Wallet Pass Installed`` / ``Wallet Pass Removed`` track event on ``events.raw`` whose only
identifier is the pass serial (linked to the customer when the pass was issued), so
engagement and segments see who carries the card.

The same activity, and every push that went out, is also announced on
``wallet.pass-events`` keyed by customer, for the gateway's live ``passEvents``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import common_pb2, events_pb2
from services.platform import topics
from services.wallet.records import StoredPass

# Names the pass-event ids are derived in (uuid5), so a redelivery carries the same id.
_PASS_EVENT_IDS = uuid.UUID("0f5b2c1e-7a44-4d0e-9c1a-5e2b7d9a3c61")

INSTALLED = "Wallet Pass Installed"
REMOVED = "Wallet Pass Removed"
SOURCE = "wallet"


def pass_event(
    name: str, doc: StoredPass, device_id: str, reason: str, now: datetime
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


def live_pass_event(
    kind: events_pb2.PassEventKind.ValueType, doc: StoredPass, what: str, now: datetime
) -> events_pb2.PassEvent:
    """The ``wallet.pass-events`` message: ``what`` tells this occurrence apart from others
    of the same kind on the same pass (the device and time, or the pass version pushed)."""
    stamp = Timestamp()
    stamp.FromDatetime(now)
    name = f"{doc['_id']}|{events_pb2.PassEventKind.Name(kind)}|{what}"
    return events_pb2.PassEvent(
        event_id=str(uuid.uuid5(_PASS_EVENT_IDS, name)),
        customer_id=str(doc.get("customer_id", "")),
        serial_number=doc["_id"],
        platform=str(doc.get("platform", "")).upper(),
        kind=kind,
        at=stamp,
    )


class Publisher(Protocol):
    """Kafka as the feedback uses it (the platform bus)."""

    async def publish(self, topic: str, key: str | bytes | None, message: Message) -> None:
        """Send one message; return once the broker acknowledged it."""
        ...

    async def publish_many(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> None:
        """Send many messages; return when every one is acknowledged."""
        ...


class WalletFeedback:
    """Publishes installed / removed events on ``events.raw`` keyed by serial (one pass's
    events in order), and installed / pushed / removed on ``wallet.pass-events`` keyed by
    customer."""

    def __init__(self, bus: Publisher) -> None:
        self.bus = bus

    async def installed(self, doc: StoredPass, device_id: str) -> None:
        """A phone registered for the pass."""
        now = datetime.now(UTC)
        event = pass_event(INSTALLED, doc, device_id, "", now)
        live = live_pass_event(
            events_pb2.PASS_EVENT_KIND_INSTALLED, doc, f"{device_id}|{now.isoformat()}", now
        )
        await self.bus.publish_many(
            [
                (topics.EVENTS_RAW, doc["_id"], event),
                (topics.WALLET_PASS_EVENTS, live.customer_id, live),
            ]
        )

    async def removed(self, doc: StoredPass, device_id: str, reason: str = "") -> None:
        """A phone unregistered, or APNs says the device no longer has the pass."""
        now = datetime.now(UTC)
        event = pass_event(REMOVED, doc, device_id, reason, now)
        live = live_pass_event(
            events_pb2.PASS_EVENT_KIND_REMOVED, doc, f"{device_id}|{now.isoformat()}", now
        )
        await self.bus.publish_many(
            [
                (topics.EVENTS_RAW, doc["_id"], event),
                (topics.WALLET_PASS_EVENTS, live.customer_id, live),
            ]
        )

    async def pushed(self, doc: StoredPass) -> None:
        """A change of the pass went out (an APNs push or a Google object update); the id
        follows the pass version, so pushing the same version again repeats the id."""
        live = live_pass_event(
            events_pb2.PASS_EVENT_KIND_PUSHED,
            doc,
            str(doc.get("update_seq", "")),
            datetime.now(UTC),
        )
        await self.bus.publish(topics.WALLET_PASS_EVENTS, live.customer_id, live)
