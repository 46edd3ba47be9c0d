"""Kafka handlers of the identity service: raw events in, resolved events out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from lodestar.v1 import events_pb2
from services.identity.graph import (
    IdentifierValue,
    Resolution,
    linking_identifiers,
    needs_write,
    resolve_batch,
)
from services.identity.store import IdentityStore, Link
from services.platform import topics
from services.platform.bus import Bus, Delivery
from services.platform.errors import PoisonMessage

Prepared = tuple[events_pb2.Event, list[IdentifierValue]]


class RawEventHandler:
    """Resolves raw events to customers and publishes them on ``events.resolved``."""

    def __init__(
        self, store: IdentityStore, bus: Bus, last_seen_resolution: timedelta = timedelta(0)
    ) -> None:
        self.store = store
        self.bus = bus
        self.last_seen_resolution = last_seen_resolution

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        """Resolve the batch (one read and one write to MongoDB), then publish it and wait
        for the broker's acknowledgement; the bus commits the offsets afterwards."""
        prepared: list[Prepared] = []
        for delivery in batch:
            event = delivery.message
            identifiers = linking_identifiers((i.type, i.value) for i in event.identifiers)
            if not identifiers:
                raise PoisonMessage(f"event {event.event_id or '?'} has no usable identifier")
            prepared.append((event, identifiers))
        resolutions = await self._resolve(prepared)
        resolved = []
        for (event, _), resolution in zip(prepared, resolutions, strict=True):
            out = events_pb2.Event()
            out.CopyFrom(event)
            out.customer_id = resolution.customer_id
            resolved.append((topics.EVENTS_RESOLVED, resolution.customer_id, out))
        await self.bus.publish_many(resolved)

    async def _resolve(self, prepared: list[Prepared]) -> list[Resolution]:
        stored = await self.store.owners([i for _, ids in prepared for i in ids])
        resolutions = resolve_batch(
            [(e.event_id, ids) for e, ids in prepared],
            {key: owner.customer_id for key, owner in stored.items()},
        )
        links = [
            Link(r.customer_id, i, event.source, _seen_at(event))
            for (event, _), r in zip(prepared, resolutions, strict=True)
            for i in r.links
            if needs_write(stored.get(i.key), _seen_at(event), self.last_seen_resolution)
        ]
        conflicts = await self.store.link(links)
        if conflicts and len(prepared) > 1:
            # Another consumer linked one of these identifiers meanwhile: redo the batch one
            # event at a time so each sees the graph as stored.
            return [(await self._resolve([p]))[0] for p in prepared]
        return resolutions


def _seen_at(event: events_pb2.Event) -> datetime:
    if event.HasField("received_at"):
        return event.received_at.ToDatetime(UTC)
    return datetime.now(UTC)
