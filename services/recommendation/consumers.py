"""Kafka handlers of recommendation: resolved product events in as interactions and item
properties; merges move a customer's interactions to the survivor."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.json_format import MessageToDict

from lodestar.v1 import events_pb2
from services.platform.bus import Delivery
from services.platform.destinations import RECOMMENDATIONS, event_allows
from services.platform.merges import Merge, MergeHandler
from services.platform.timestamps import time_of
from services.recommendation.interactions import (
    INTERACTION_EVENTS,
    Interaction,
    ItemProperties,
    interactions_of,
    products_of,
)
from services.recommendation.store import RecommendationStore


def event_interactions(event: events_pb2.Event) -> tuple[list[Interaction], list[ItemProperties]]:
    """The interactions a resolved event makes and the product properties it carries; none
    for an event whose ``integrations`` turn recommendations away."""
    if event.type != events_pb2.EVENT_TYPE_TRACK or not event.customer_id:
        return [], []
    # Most events feed no model: they are dropped before their properties are decoded.
    if event.name not in INTERACTION_EVENTS:
        return [], []
    if not event_allows(event.integrations, RECOMMENDATIONS):
        return [], []
    at = time_of(event)
    properties = MessageToDict(event.properties) if event.HasField("properties") else {}
    products = products_of(event.name, properties)
    found = interactions_of(
        event.event_id, event.customer_id, event.name, properties, at, products=products
    )
    if not found:
        return [], []
    return found, products


class ResolvedEventHandler:
    """Stores product interactions and the item properties they carry (idempotent: an
    interaction's key is its event and product, and item properties are ``$set``)."""

    def __init__(self, store: RecommendationStore) -> None:
        self.store = store

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        """The item properties and the interactions of the whole batch, written side by
        side (if either fails the batch is redelivered, and both writes are idempotent)."""
        interactions: list[Interaction] = []
        items: list[ItemProperties] = []
        for delivery in batch:
            found, products = event_interactions(delivery.message)
            interactions.extend(found)
            items.extend(products)
        await asyncio.gather(
            self.store.save_seen_items(items, datetime.now(UTC)),
            self.store.save_interactions(interactions),
        )


def merge_handler(store: RecommendationStore) -> MergeHandler:
    """The ``identity.merged`` handler of recommendation: a merged customer's interactions
    follow the survivor (the next model sees one customer)."""

    async def follow(merge: Merge) -> None:
        for merged_id in merge.merged_ids:
            await store.move_customer(merged_id, merge.survivor_id)

    return MergeHandler(follow)
