"""Kafka handlers of the identity service: raw events in, resolved events and merges out;
privacy erasure requests in, completions out."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import events_pb2
from services.identity.resolution import EventIdentifiers, Resolver
from services.identity.store import IdentityStore
from services.platform import topics
from services.platform.bus import Bus, Delivery, Pending
from services.platform.errors import InvalidArgument, PoisonMessage
from services.platform.timestamps import CLOCK_ALLOWANCE

log = logging.getLogger(__name__)
SERVICE = "identity"
# How far a receipt time may run ahead of this service's clock (hosts' clocks differ a little).


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def event_identifiers(event: events_pb2.Event) -> EventIdentifiers:
    """What the resolver needs of a raw event. Its time is the receipt, but never later than
    now: identifiers' last seen only moves forward, and events can reach Kafka by other paths
    than the gateway, so one forged far-future time would otherwise pin it for good."""
    now = datetime.now(UTC)
    at = event.received_at.ToDatetime(UTC) if event.HasField("received_at") else now
    if at > now + CLOCK_ALLOWANCE:
        at = now
    return EventIdentifiers(
        event_id=event.event_id,
        raw=[(i.type, i.value) for i in event.identifiers],
        source=event.source,
        at=at,
        # Only an alias call links a previous id; on other calls the field means nothing.
        previous_id=event.previous_id if event.type == events_pb2.EVENT_TYPE_ALIAS else "",
    )


class RawEventHandler:
    """Resolves raw events to customers; publishes them on ``events.resolved`` and every
    merge on ``identity.merged``, after the graph is stored."""

    def __init__(self, resolver: Resolver, bus: Bus) -> None:
        self.resolver = resolver
        self.bus = bus

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> Pending:
        """Resolve the batch and queue its messages; the bus commits the offsets once the
        broker acknowledged them (and handles the next batch meanwhile)."""
        events = [d.message for d in batch]
        for event in events:
            if not event.event_id:
                raise PoisonMessage("raw event without event_id")
        try:
            outcome = await self.resolver.resolve([event_identifiers(e) for e in events])
        except InvalidArgument as exc:
            # The whole batch fails; the bus retries it message by message and dead-letters
            # only the one without a usable identifier.
            raise PoisonMessage(str(exc)) from None
        records: list[tuple[str, str | bytes | None, events_pb2.Event | events_pb2.IdentityMerged]]
        records = []
        for event, customer_id in zip(events, outcome.customer_ids, strict=True):
            out = events_pb2.Event()
            out.CopyFrom(event)
            out.customer_id = customer_id
            records.append((topics.EVENTS_RESOLVED, customer_id, out))
        for merge in outcome.merges:
            records.append(
                (
                    topics.IDENTITY_MERGED,
                    merge.survivor_id,
                    events_pb2.IdentityMerged(
                        event_id=merge.merge_id,
                        survivor_id=merge.survivor_id,
                        merged_ids=merge.merged_ids,
                        caused_by_event_id=merge.caused_by_event_id,
                        merged_at=_stamp(merge.at),
                    ),
                )
            )
        return await self.bus.publish_many_later(records)


def identity_export(store: IdentityStore) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """What identity holds about a customer, for a privacy export."""

    async def export(customer_id: str) -> dict[str, Any]:
        current = await store.current_id(customer_id)
        found = await store.identities(current) if current else []
        return {
            "identifiers": [
                {
                    "type": i.type,
                    "value": i.value,
                    "source": i.source,
                    "first_seen": i.first_seen.isoformat(),
                    "last_seen": i.last_seen.isoformat(),
                }
                for i in found
            ]
        }

    return export
