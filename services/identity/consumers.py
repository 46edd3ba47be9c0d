"""Kafka handlers of the identity service: raw events in, resolved events out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from lodestar.v1 import events_pb2
from services.identity.graph import linking_identifiers, resolve_customer
from services.identity.store import IdentityStore
from services.platform import topics
from services.platform.bus import Bus, Delivery
from services.platform.errors import PoisonMessage


class RawEventHandler:
    """Resolves each raw event to a customer and publishes it on ``events.resolved``."""

    def __init__(self, store: IdentityStore, bus: Bus) -> None:
        self.store = store
        self.bus = bus

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        """Resolve in order (a later event may reuse an identifier an earlier one linked),
        then publish the batch and wait for the broker's acknowledgement."""
        resolved: list[tuple[str, str, events_pb2.Event]] = []
        for delivery in batch:
            event = delivery.message
            identifiers = linking_identifiers((i.type, i.value) for i in event.identifiers)
            if not identifiers:
                raise PoisonMessage(f"event {event.event_id or '?'} has no usable identifier")
            owners = await self.store.owners(identifiers)
            customer_id = resolve_customer(identifiers, owners, event.event_id)
            seen_at = (
                event.received_at.ToDatetime(UTC)
                if event.HasField("received_at")
                else datetime.now(UTC)
            )
            await self.store.link(customer_id, identifiers, event.source, seen_at)
            out = events_pb2.Event()
            out.CopyFrom(event)
            out.customer_id = customer_id
            resolved.append((topics.EVENTS_RESOLVED, customer_id, out))
        await self.bus.publish_many(resolved)
