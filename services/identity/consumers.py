"""Kafka handlers of the identity service: raw events in, resolved events and merges out;
privacy erasure requests in, completions out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import events_pb2
from services.identity.resolution import EventIdentifiers, Resolver
from services.identity.store import IdentityStore
from services.platform import topics
from services.platform.bus import Bus, Delivery, Pending
from services.platform.errors import InvalidArgument, PoisonMessage
from services.platform.privacy import completion

log = logging.getLogger(__name__)
SERVICE = "identity"


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def event_identifiers(event: events_pb2.Event) -> EventIdentifiers:
    """What the resolver needs of a raw event."""
    at = event.received_at.ToDatetime(UTC) if event.HasField("received_at") else datetime.now(UTC)
    return EventIdentifiers(
        event_id=event.event_id,
        raw=[(i.type, i.value) for i in event.identifiers],
        source=event.source,
        at=at,
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


class PrivacyHandler:
    """Erases or exports a customer's identifiers on a privacy request and reports
    completion (see :mod:`services.platform.privacy`)."""

    def __init__(self, store: IdentityStore, bus: Bus) -> None:
        self.store = store
        self.bus = bus

    async def __call__(self, batch: Sequence[Delivery[events_pb2.PrivacyRequest]]) -> None:
        """Act on each request (idempotent: erasing twice removes nothing more)."""
        answers = []
        for delivery in batch:
            request = delivery.message
            if not request.customer_id:
                raise PoisonMessage("privacy request without customer_id")
            if request.kind == events_pb2.PRIVACY_REQUEST_KIND_ERASE:
                removed = await self.store.erase(request.customer_id, datetime.now(UTC))
                log.info(
                    "customer erased",
                    extra={
                        "fields": {
                            "request_id": request.request_id,
                            "customer_id": request.customer_id,
                            "identifiers_removed": removed,
                        }
                    },
                )
                answer = completion(request, SERVICE)
            elif request.kind == events_pb2.PRIVACY_REQUEST_KIND_EXPORT:
                current = await self.store.current_id(request.customer_id)
                found = await self.store.identities(current) if current else []
                answer = completion(
                    request,
                    SERVICE,
                    {
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
                    },
                )
            else:
                raise PoisonMessage(f"unknown privacy request kind {request.kind}")
            answers.append((topics.PRIVACY_COMPLETED, request.customer_id, answer))
        await self.bus.publish_many(answers)
