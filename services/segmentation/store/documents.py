"""MongoDB persistence of segmentation (database ``<prefix>_segmentation``).

- ``segments``: definitions (rule as canonical JSON), version, status, size, backfill progress.
- ``profiles``: this service's own view of each profile (the document rules read), replaced
  by every profile change; PII traits appear by name only (``traits_present``).
- ``events``: recent events (name, time, scalar properties) for event conditions; expire
  after the retention setting.
- ``memberships``: one document per (segment, customer) while the customer is a member.
- ``scores``: predictive scores per customer, with the model version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.platform.errors import AlreadyExists
from services.platform.mongo import Document, IndexSpec, ensure_indexes
from services.segmentation.records import (
    MemberRecord,
    ProfileView,
    SegmentChanges,
    StoredEvent,
    StoredScores,
    StoredSegment,
    membership_id,
)
from services.segmentation.rules import EventRecord, Rule
from services.segmentation.store.rule_query import prefilter, to_query

DUPLICATE_KEY = 11000
CHUNK = 50  # $in lists stay short: the local server slows down on long ones
# One reply per chunk: a chunk's documents come back in the first batch (no getMore).
CHUNK_BATCH = 10_000


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


# The fields of a profile view that a profile change replaces (scores are this service's).
VIEW_FIELDS = (
    "traits",
    "traits_present",
    "event_counts",
    "first_seen",
    "last_seen",
    "orders",
    "loyalty",
    "consent",
    "behaviour",
    "engagement",
    "changed_at",
)


class SegmentationStore:
    """Segments, profile views, recent events, memberships and scores."""

    def __init__(self, db: AsyncIOMotorDatabase[Document], event_retention_s: int) -> None:
        self.db = db
        self.segments = db["segments"]
        self.profiles = db["profiles"]
        self.events = db["events"]
        self.memberships = db["memberships"]
        self.scores = db["scores"]
        self.event_retention_s = event_retention_s

    async def ensure_indexes(self) -> None:
        """Members by segment in customer order, events per customer by time, expiry."""
        await ensure_indexes(
            self.db,
            [
                IndexSpec("memberships", [("segment_id", 1), ("customer_id", 1)]),
                IndexSpec("memberships", [("customer_id", 1)]),
                IndexSpec("events", [("customer_id", 1), ("at", -1)]),
                IndexSpec(
                    "events",
                    [("stored_at", 1)],
                    options={"expireAfterSeconds": self.event_retention_s},
                ),
            ],
        )

    # ---- segments ---------------------------------------------------------------------

    async def create_segment(self, doc: StoredSegment) -> None:
        """Insert a new definition; :class:`SegmentExists` if the id is taken."""
        try:
            await self.segments.insert_one(dict(doc))
        except DuplicateKeyError:
            raise SegmentExists(doc["_id"]) from None

    async def update_segment(
        self, segment_id: str, changes: SegmentChanges
    ) -> StoredSegment | None:
        """Apply ``changes`` and return the new definition (``None`` if unknown)."""
        doc = await self.segments.find_one_and_update(
            {"_id": segment_id}, {"$set": dict(changes)}, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else _segment(doc)

    async def set_progress(
        self, segment_id: str, version: int, evaluated: int, total: int, live: bool
    ) -> None:
        """Backfill progress of one version (ignored once the rule moved on)."""
        changes: Document = {"backfill_evaluated": evaluated, "backfill_total": total}
        if live:
            changes["status"] = "live"
        await self.segments.update_one({"_id": segment_id, "version": version}, {"$set": changes})

    async def delete_segment(self, segment_id: str) -> bool:
        """Remove the definition; ``True`` if it existed."""
        result = await self.segments.delete_one({"_id": segment_id})
        return bool(result.deleted_count)

    async def get_segment(self, segment_id: str) -> StoredSegment | None:
        """One definition."""
        doc = await self.segments.find_one({"_id": segment_id})
        return None if doc is None else _segment(doc)

    async def list_segments(self) -> list[StoredSegment]:
        """Every definition, by id."""
        return [_segment(d) for d in await self.segments.find({}).sort("_id", 1).to_list(None)]

    async def sizes(self, segment_ids: Sequence[str]) -> dict[str, int]:
        """Current member counts."""
        return {s: await self.memberships.count_documents({"segment_id": s}) for s in segment_ids}

    # ---- profile views and events -------------------------------------------------------

    async def save_profiles(self, docs: Sequence[ProfileView]) -> None:
        """Replace the views of these customers (later documents win within the batch),
        keeping the scores this service computed."""
        latest = {d["_id"]: d for d in docs}
        ops = []
        for customer_id, doc in latest.items():
            fields = {k: v for k, v in doc.items() if k != "_id"}
            update: Document = {"$set": fields}
            gone = [k for k in VIEW_FIELDS if k not in fields]
            if gone:
                update["$unset"] = dict.fromkeys(gone, "")
            ops.append(UpdateOne({"_id": customer_id}, update, upsert=True))
        if ops:
            await self.profiles.bulk_write(ops, ordered=False)

    async def profiles_for(self, customer_ids: Sequence[str]) -> dict[str, ProfileView]:
        """Views by customer id (unknown ids left out)."""
        found: dict[str, ProfileView] = {}
        for doc in await self._in_chunks(self.profiles, "_id", customer_ids):
            found[doc["_id"]] = doc
        return found

    @staticmethod
    async def _in_chunks(
        collection: AsyncIOMotorCollection[Document],
        field: str,
        values: Sequence[str],
        extra: Mapping[str, Any] | None = None,
        sort: str | None = None,
    ) -> list[Document]:
        """The documents whose ``field`` is one of ``values``: short ``$in`` lists, asked
        side by side, each answered in one reply (no round trip waits for the one before)."""

        async def one(chunk: Sequence[str]) -> list[Document]:
            cursor = collection.find({field: {"$in": list(chunk)}, **(extra or {})})
            if sort is not None:
                cursor = cursor.sort(sort, 1)
            return await cursor.batch_size(CHUNK_BATCH).to_list(None)

        parts = await asyncio.gather(*(one(c) for c in _chunks(list(dict.fromkeys(values)))))
        return [doc for part in parts for doc in part]

    async def count_profiles(self) -> int:
        """How many customers have a view."""
        return await self.profiles.estimated_document_count()

    async def stream_profiles(
        self, query: Mapping[str, Any] | None = None
    ) -> AsyncIterator[ProfileView]:
        """Every view (matching ``query``), in id order, in batches from the server."""
        cursor = self.profiles.find(dict(query or {})).sort("_id", 1).batch_size(1_000)
        async for doc in cursor:
            yield doc

    def stream_buyers(self) -> AsyncIterator[ProfileView]:
        """The views of every customer with an order, in id order."""
        return self.stream_profiles({"orders.count": {"$gt": 0}})

    def stream_candidates(self, rule: Rule, now: datetime) -> AsyncIterator[ProfileView]:
        """Every view that can match ``rule`` (its field conditions pushed down; event
        conditions left to the caller), in id order."""
        return self.stream_profiles(prefilter(rule, now))

    async def matching(self, rule: Rule, now: datetime) -> set[str] | None:
        """Ids of the views ``rule`` selects at ``now``, found by the database alone; ``None``
        when the rule has event conditions (the caller evaluates those)."""
        query = to_query(rule, now)
        if query is None:
            return None
        return {i async for i in self.matching_ids(query)}

    async def matching_ids(self, query: Mapping[str, Any]) -> AsyncIterator[str]:
        """Ids of the views matching a pushed-down rule."""
        async for doc in self.profiles.find(dict(query), {"_id": 1}).batch_size(5_000):
            yield doc["_id"]

    async def save_events(self, records: Sequence[StoredEvent]) -> None:
        """Store recent events (a redelivered one is stored once: its id is the key)."""
        if not records:
            return
        try:
            await self.events.insert_many([dict(r) for r in records], ordered=False)
        except BulkWriteError as exc:
            if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise

    async def events_for(
        self, customer_ids: Sequence[str], since: datetime
    ) -> dict[str, list[EventRecord]]:
        """Each customer's stored events since ``since``, oldest first."""
        found: dict[str, list[EventRecord]] = {c: [] for c in customer_ids}
        docs = await self._in_chunks(
            self.events, "customer_id", customer_ids, {"at": {"$gte": since}}, sort="at"
        )
        # Each chunk is in time order and holds all of its customers' events.
        for doc in docs:
            found[doc["customer_id"]].append(
                EventRecord(doc["name"], _utc(doc["at"]), doc.get("properties") or {})
            )
        return found

    # ---- memberships ----------------------------------------------------------------------

    async def memberships_of(
        self, customer_ids: Sequence[str]
    ) -> dict[str, dict[str, MemberRecord]]:
        """customer id -> segment id -> membership."""
        found: dict[str, dict[str, MemberRecord]] = {c: {} for c in customer_ids}
        for doc in await self._in_chunks(self.memberships, "customer_id", customer_ids):
            found.setdefault(doc["customer_id"], {})[doc["segment_id"]] = _member(doc)
        return found

    async def member_ids(self, segment_id: str) -> AsyncIterator[str]:
        """Every member of a segment, in customer id order."""
        cursor = self.memberships.find({"segment_id": segment_id}, {"customer_id": 1})
        async for doc in cursor.sort("customer_id", 1).batch_size(5_000):
            yield doc["customer_id"]

    async def members_page(self, segment_id: str, after: str, limit: int) -> list[MemberRecord]:
        """A page of members after customer id ``after``."""
        query: Document = {"segment_id": segment_id}
        if after:
            query["customer_id"] = {"$gt": after}
        cursor = self.memberships.find(query).sort("customer_id", 1).limit(limit)
        return [_member(d) for d in await cursor.to_list(None)]

    async def members_among(self, segment_id: str, customer_ids: Sequence[str]) -> set[str]:
        """Which of these customers are members now."""
        ids = [membership_id(segment_id, c) for c in customer_ids]
        found: set[str] = set()
        for chunk in _chunks(ids):
            async for doc in self.memberships.find(
                {"_id": {"$in": list(chunk)}}, {"customer_id": 1}
            ):
                found.add(doc["customer_id"])
        return found

    async def count_members(self, segment_id: str) -> int:
        """The segment's size."""
        return await self.memberships.count_documents({"segment_id": segment_id})

    async def apply_memberships(
        self, entered: Sequence[MemberRecord], exited: Sequence[tuple[str, str]]
    ) -> None:
        """Record entries (membership documents) and exits ((segment, customer) pairs).
        An entry already recorded (a redelivery) stays as it was: entries are inserted, the
        duplicate key is that answer (an insert costs the server a fraction of an upsert)."""
        gone = [membership_id(s, c) for s, c in exited]
        await asyncio.gather(
            self._insert_new(entered),
            *(self.memberships.delete_many({"_id": {"$in": list(c)}}) for c in _chunks(gone)),
        )

    async def _insert_new(self, entered: Sequence[MemberRecord]) -> None:
        if not entered:
            return
        try:
            await self.memberships.insert_many([dict(d) for d in entered], ordered=False)
        except BulkWriteError as exc:
            if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise

    # ---- scores ---------------------------------------------------------------------------

    async def save_scores(self, scores: Sequence[StoredScores]) -> None:
        """Replace the scores of these customers and copy them into their views."""
        if not scores:
            return
        await self.scores.bulk_write(
            [ReplaceOne({"_id": s["_id"]}, dict(s), upsert=True) for s in scores], ordered=False
        )
        await self.profiles.bulk_write(
            [UpdateOne({"_id": s["_id"]}, {"$set": {"scores": _rule_scores(s)}}) for s in scores],
            ordered=False,
        )

    async def scores_of(self, customer_ids: Sequence[str]) -> dict[str, StoredScores]:
        """Scores by customer id (customers never scored left out)."""
        found: dict[str, StoredScores] = {}
        for chunk in _chunks(list(dict.fromkeys(customer_ids))):
            async for doc in self.scores.find({"_id": {"$in": list(chunk)}}):
                found[doc["_id"]] = cast(StoredScores, doc)
        return found

    async def move_customer(self, merged_id: str, survivor_id: str) -> None:
        """A merged customer's view goes (the survivor's next change brings its own) and its
        events now belong to the survivor."""
        await self.profiles.delete_one({"_id": merged_id})
        await self.events.update_many(
            {"customer_id": merged_id}, {"$set": {"customer_id": survivor_id}}
        )

    # ---- privacy ----------------------------------------------------------------------------

    async def erase(self, customer_id: str) -> list[str]:
        """Delete everything held about a customer; returns the segments they were in."""
        segments = [
            d["segment_id"] async for d in self.memberships.find({"customer_id": customer_id})
        ]
        await self.memberships.delete_many({"customer_id": customer_id})
        await self.profiles.delete_one({"_id": customer_id})
        await self.events.delete_many({"customer_id": customer_id})
        await self.scores.delete_one({"_id": customer_id})
        return segments

    async def export(self, customer_id: str) -> dict[str, Any]:
        """What segmentation holds about a customer, as JSON-ready data."""
        memberships = [
            {"segment_id": d["segment_id"], "since": _utc(d["since"]).isoformat()}
            async for d in self.memberships.find({"customer_id": customer_id})
        ]
        scores = await self.scores.find_one({"_id": customer_id}, {"_id": 0})
        events = [
            {"name": d["name"], "at": _utc(d["at"]).isoformat(), "properties": d.get("properties")}
            async for d in self.events.find({"customer_id": customer_id}).sort("at", 1)
        ]
        if not memberships and scores is None and not events:
            return {}
        return {
            "segments": memberships,
            "scores": _json_ready(scores or {}),
            "events": events,
        }


class SegmentExists(AlreadyExists):
    """A segment with this id exists already."""

    def __init__(self, segment_id: str) -> None:
        super().__init__(f"segment {segment_id!r} already exists")
        self.segment_id = segment_id


_RULE_SCORES = (
    "recency",
    "frequency",
    "monetary",
    "rfm_cell",
    "p_alive",
    "expected_purchases_30d",
    "expected_purchases_90d",
    "clv_12m",
)


def _rule_scores(scores: Mapping[str, Any]) -> Document:
    """The score fields rules read (``scores.<name>``)."""
    return {k: scores[k] for k in _RULE_SCORES if k in scores}


def _segment(doc: Document) -> StoredSegment:
    """A stored definition (written only by :meth:`SegmentationStore.create_segment`)."""
    return cast(StoredSegment, doc)


def _member(doc: Document) -> MemberRecord:
    """A stored membership (written only by :meth:`SegmentationStore.apply_memberships`)."""
    return cast(MemberRecord, doc)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _json_ready(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _utc(v).isoformat() if isinstance(v, datetime) else v for k, v in doc.items()}
