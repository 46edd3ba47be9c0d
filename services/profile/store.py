"""MongoDB persistence of profiles (database ``<prefix>_profile``).

Idempotency: each profile keeps the ids of its most recent events; an update only applies
when its event id is not among them, and the update and the id are written in one atomic
document update. The window must cover what Kafka can redeliver (one uncommitted batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from services.platform.mongo import Document
from services.profile.fold import ProfileDelta, original_name

DUPLICATE_KEY = 11000


class StoredProfile:
    """A profile as read back from the store, with original field names."""

    def __init__(self, doc: Document) -> None:
        self.customer_id: str = doc["_id"]
        self.traits: dict[str, Any] = {
            original_name(k): v for k, v in (doc.get("traits") or {}).items()
        }
        self.event_counts: dict[str, int] = {
            original_name(k): int(v) for k, v in (doc.get("event_counts") or {}).items()
        }
        self.first_seen: datetime | None = doc.get("first_seen")
        self.last_seen: datetime | None = doc.get("last_seen")


class ProfileStore:
    """Profiles keyed by customer id."""

    def __init__(self, db: AsyncIOMotorDatabase[Document], dedupe_window: int) -> None:
        self.profiles = db["profiles"]
        self.dedupe_window = dedupe_window

    async def ensure_indexes(self) -> None:
        """Profiles are addressed by ``_id`` only so far; nothing to create."""

    def _update(self, delta: ProfileDelta) -> UpdateOne:
        change: dict[str, Any] = {
            "$push": {
                "recent_event_ids": {"$each": [delta.event_id], "$slice": -self.dedupe_window}
            },
            "$min": {"first_seen": delta.seen_at},
            "$max": {"last_seen": delta.seen_at},
        }
        if delta.set_traits:
            change["$set"] = {f"traits.{k}": v for k, v in delta.set_traits.items()}
        if delta.count_increments:
            change["$inc"] = {f"event_counts.{k}": n for k, n in delta.count_increments.items()}
        # Matches only when the event was not applied yet. For a profile that exists and has
        # seen it, the upsert collides on _id: that duplicate-key error means "already done".
        return UpdateOne(
            {"_id": delta.customer_id, "recent_event_ids": {"$ne": delta.event_id}},
            change,
            upsert=True,
        )

    async def apply(self, deltas: Sequence[ProfileDelta]) -> int:
        """Apply the deltas in one ordered round trip; returns how many were new.

        Ordered, so one customer's events land in the order they arrived.
        """
        if not deltas:
            return 0
        ops = [self._update(d) for d in deltas]
        applied = len(ops)
        start = 0
        while start < len(ops):
            try:
                await self.profiles.bulk_write(ops[start:], ordered=True)
                return applied
            except BulkWriteError as exc:
                error = exc.details["writeErrors"][0]
                if error["code"] != DUPLICATE_KEY:
                    raise
                applied -= 1
                start += error["index"] + 1
        return applied

    async def get(self, customer_id: str) -> StoredProfile | None:
        """The profile of ``customer_id``, or ``None``."""
        doc = await self.profiles.find_one({"_id": customer_id}, {"recent_event_ids": 0})
        return None if doc is None else StoredProfile(doc)
