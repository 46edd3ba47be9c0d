"""MongoDB persistence of the identity graph (database ``<prefix>_identity``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from services.identity.graph import IdentifierValue, Ownership
from services.platform.mongo import Document, IndexSpec, ensure_indexes

DUPLICATE_KEY = 11000

INDEXES = (
    # _id is "type:value": each identifier belongs to exactly one customer.
    IndexSpec("identifiers", [("customer_id", 1)]),
)


class Link(NamedTuple):
    """An identifier to attach to a customer: the source and the time that saw them together."""

    customer_id: str
    identifier: IdentifierValue
    source: str
    seen_at: datetime


class IdentityStore:
    """Identifiers and the customer each belongs to."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.identifiers = db["identifiers"]
        self.db = db

    async def ensure_indexes(self) -> None:
        """Create the collections' indexes."""
        await ensure_indexes(self.db, INDEXES)

    async def owners(self, identifiers: Sequence[IdentifierValue]) -> dict[str, Ownership]:
        """Map each known identifier key to its customer and when it was last seen."""
        if not identifiers:
            return {}
        cursor = self.identifiers.find(
            {"_id": {"$in": list({i.key for i in identifiers})}},
            {"customer_id": 1, "last_seen": 1},
        )
        return {doc["_id"]: Ownership(doc["customer_id"], doc["last_seen"]) async for doc in cursor}

    async def link(self, links: Sequence[Link]) -> set[str]:
        """Attach each identifier to its customer in one round trip.

        Returns the keys of identifiers another customer owned already (they keep their
        owner: the unique ``_id`` decides races between consumers).
        """
        first: dict[str, Link] = {}
        last_seen: dict[str, datetime] = {}
        for link in links:
            key = link.identifier.key
            first.setdefault(key, link)
            last_seen[key] = max(link.seen_at, last_seen.get(key, link.seen_at))
        if not first:
            return set()
        ops = [
            UpdateOne(
                {"_id": key, "customer_id": link.customer_id},
                {
                    "$setOnInsert": {
                        "type": link.identifier.type,
                        "value": link.identifier.value,
                        "first_seen": link.seen_at,
                        "source": link.source,
                    },
                    "$max": {"last_seen": last_seen[key]},
                },
                upsert=True,
            )
            for key, link in first.items()
        ]
        try:
            await self.identifiers.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(e["code"] != DUPLICATE_KEY for e in errors):
                raise
            keys = list(first)
            return {keys[e["index"]] for e in errors}
        return set()

    async def identities(self, customer_id: str) -> list[IdentifierValue]:
        """Every identifier of a customer, in a stable order."""
        cursor = self.identifiers.find({"customer_id": customer_id}, {"type": 1, "value": 1})
        return sorted([IdentifierValue(d["type"], d["value"]) async for d in cursor])

    async def owner_of(self, identifier: IdentifierValue) -> str | None:
        """The customer an identifier belongs to, if any."""
        doc = await self.identifiers.find_one({"_id": identifier.key}, {"customer_id": 1})
        return None if doc is None else str(doc["customer_id"])
