"""MongoDB persistence of profiles (database ``<prefix>_profile``).

PII traits (e-mail, phone, names, address, birthday by default) never rest in clear: they are
stored AES-GCM encrypted under ``pii.<trait>`` and decrypted only when a profile is read.

Groups (accounts) from group calls live in ``groups`` (one document per group id, its traits
last-write-wins by event time, PII traits encrypted the same way) and ``group_members`` (one
document per customer and group).

Privacy request records live beside them, in :mod:`services.profile.store.privacy`.

Idempotency: each profile keeps the ids of its most recent events; an update only applies
when its event id is not among them, and the update and the id are written in one atomic
document update. The window must cover what Kafka can redeliver (one uncommitted batch).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.platform.crypto import EncryptedValue, FieldCipher
from services.platform.fieldnames import original_name
from services.platform.mongo import Document, IndexSpec, ensure_indexes
from services.platform.rotation import Tally, examine
from services.profile import sessions
from services.profile.commerce import Order, orders_from
from services.profile.fold import (
    MergedDelta,
    ProfileDelta,
    ProfileSnapshot,
    ResolvedEvent,
    fold_merged,
    merge,
)
from services.profile.groups import GroupChange
from services.profile.records import (
    ConsentEntry,
    ConsentState,
    ExportedEvent,
    ExportedOrder,
    ExportedProfile,
    JsonObject,
    ProfileExport,
    StoredCart,
    TimelineRecord,
    ViewedAt,
)
from services.profile.sessions import DEFAULT_TIMEOUT, Sessions
from services.profile.timeline import TimelineSettings

DUPLICATE_KEY = 11000
# Re-encrypted values written per round trip during key rotation.
ROTATION_BATCH = 500
# Where a document keeps encrypted values: (field path, stored value, encryption context).
EncryptedFields = Callable[[Document], Iterable[tuple[str, object, str]]]


class StoredProfile:
    """A profile as read back from the store, with original field names and PII traits
    decrypted."""

    customer_id: str
    traits: JsonObject
    event_counts: dict[str, int]
    first_seen: datetime | None
    last_seen: datetime | None
    consent: dict[str, ConsentState]
    consent_history: list[ConsentEntry]
    channels: list[str]
    devices: list[str]
    cart: StoredCart
    sources: list[str]
    last_page: ViewedAt | None
    last_screen: ViewedAt | None
    event_last: dict[str, datetime]
    orders: list[Order]
    redeemed: dict[str, int]
    sessions: Sessions
    # The loyalty tier last announced on profile.changed (None: never announced).
    announced_tier: str | None

    def __init__(
        self,
        doc: Document,
        cipher: FieldCipher | None,
        session_timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        self.customer_id = doc["_id"]
        self.traits = {original_name(k): v for k, v in (doc.get("traits") or {}).items()}
        for key, encrypted in (doc.get("pii") or {}).items():
            if cipher is None:
                raise RuntimeError("profile holds encrypted traits but no PII keys are set")
            name = original_name(key)
            clear = cipher.decrypt(EncryptedValue.from_document(encrypted), _context(name))
            self.traits[name] = json.loads(clear)
        self.event_counts = {
            original_name(k): int(v) for k, v in (doc.get("event_counts") or {}).items()
        }
        self.first_seen = doc.get("first_seen")
        self.last_seen = doc.get("last_seen")
        # Sub-documents the fold writes whole (services/profile/fold.py): their shape is fixed.
        self.consent = cast(dict[str, ConsentState], dict(doc.get("consent") or {}))
        self.consent_history = sorted(
            cast(list[ConsentEntry], doc.get("consent_history") or []),
            key=lambda e: (e["at"], e["purpose"]),
        )
        self.channels = sorted(doc.get("channels") or [])
        self.devices = sorted(doc.get("devices") or [])
        self.cart = cast(StoredCart, dict(doc.get("cart") or {}))
        self.sources = sorted(doc.get("sources") or [])
        self.last_page = doc.get("last_page")
        self.last_screen = doc.get("last_screen")
        self.event_last = {original_name(k): v for k, v in (doc.get("event_last") or {}).items()}
        self.orders = orders_from(
            {original_name(k): v for k, v in (doc.get("orders") or {}).items()}
        )
        self.redeemed = dict(doc.get("loyalty") or {})
        self.sessions = sessions.summary(doc.get("activity") or [], session_timeout)
        self.announced_tier = doc.get("announced_tier")

    def export(self) -> ExportedProfile:
        """Everything this profile holds, as JSON-ready data."""
        return ExportedProfile(
            customer_id=self.customer_id,
            traits=self.traits,
            event_counts=self.event_counts,
            first_seen=self.first_seen.isoformat() if self.first_seen else None,
            last_seen=self.last_seen.isoformat() if self.last_seen else None,
            orders=[
                ExportedOrder(
                    order_id=o.order_id,
                    amount_minor=o.amount_minor,
                    currency=o.currency,
                    at=o.at.isoformat(),
                    refunded_minor=o.refunded_minor,
                )
                for o in self.orders
            ],
            loyalty=self.redeemed,
        )


@dataclass(frozen=True)
class StoredGroup:
    """A group as read back: original trait names, PII traits decrypted."""

    group_id: str
    traits: JsonObject
    member_count: int
    created_at: datetime | None
    updated_at: datetime | None


class ProfileStore:
    """Profiles keyed by customer id."""

    def __init__(
        self,
        db: AsyncIOMotorDatabase[Document],
        dedupe_window: int,
        cipher: FieldCipher | None = None,
        pii_traits: frozenset[str] = frozenset(),
        timeline: TimelineSettings | None = None,
        *,
        session_timeout: timedelta = sessions.DEFAULT_TIMEOUT,
    ) -> None:
        self.db = db
        self.session_timeout = session_timeout
        self.profiles = db["profiles"]
        self.timeline = db["timeline"]
        self.groups = db["groups"]
        self.group_members = db["group_members"]
        self.timeline_settings = timeline or TimelineSettings()
        self.dedupe_window = dedupe_window
        self.cipher = cipher
        self.pii_traits = pii_traits
        if pii_traits and cipher is None:
            raise ValueError("PII traits are configured but no cipher was given")

    @property
    def timeline_cap(self) -> int:
        """How many timeline entries a customer's pages may show in all."""
        return self.timeline_settings.cap

    def _stored_trait(
        self, key: str, value: Any, context: Callable[[str], str] | None = None
    ) -> tuple[str, Any]:
        """Where and how a trait is stored: PII encrypted under ``pii.``, else in clear."""
        name = original_name(key)
        if name in self.pii_traits and self.cipher is not None:
            encrypted = self.cipher.encrypt(json.dumps(value), (context or _context)(name))
            return f"pii.{key}", encrypted.to_document()
        return f"traits.{key}", value

    async def ensure_indexes(self) -> None:
        """The timeline's per-customer order and its expiry."""
        await ensure_indexes(
            self.db,
            [
                IndexSpec("timeline", [("customer_id", 1), ("at", -1), ("_id", -1)]),
                IndexSpec(
                    "timeline",
                    [("stored_at", 1)],
                    options={"expireAfterSeconds": self.timeline_settings.ttl_s},
                ),
                IndexSpec("group_members", [("customer_id", 1)]),
                IndexSpec("group_members", [("group_id", 1)]),
            ],
        )

    async def record(self, events: Sequence[ResolvedEvent]) -> None:
        """Add events to their customers' timelines (PII traits encrypted); a redelivered
        event is stored once (its id is the key)."""
        if not self.timeline_settings.enabled or not events:
            return
        now = datetime.now(UTC)
        docs = []
        for event in events:
            clear = {k: v for k, v in event.traits.items() if k not in self.pii_traits}
            secret = {k: v for k, v in event.traits.items() if k in self.pii_traits}
            doc: Document = {
                "_id": event.event_id,
                "customer_id": event.customer_id,
                "type": event.kind,
                "name": event.name,
                "at": event.occurred_at,
                "source": event.source,
                "properties": event.properties,
                "traits": clear,
                "stored_at": now,
            }
            if secret and self.cipher is not None:
                doc["pii"] = self.cipher.encrypt(json.dumps(secret), "timeline").to_document()
            docs.append(doc)
        try:
            await self.timeline.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise

    async def list_timeline(
        self,
        customer_id: str,
        page_size: int,
        after: tuple[datetime, str] | None,
        names: Sequence[str] = (),
    ) -> list[TimelineRecord]:
        """A page of the customer's timeline, newest first, within the configured cap; PII
        traits decrypted. ``after`` is the (time, event id) the previous page ended with;
        ``names``, when given, keeps only events of those names."""
        query: Document = {"customer_id": customer_id}
        if names:
            query["name"] = {"$in": list(names)}
        if after is not None:
            at, event_id = after
            query["$or"] = [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": event_id}}]
        docs = await (
            self.timeline.find(query).sort([("at", -1), ("_id", -1)]).limit(page_size)
        ).to_list(None)
        return [self._timeline_record(doc) for doc in docs]

    def _timeline_record(self, doc: Document) -> TimelineRecord:
        """A timeline document as the record the API and the export read."""
        traits: JsonObject = dict(doc.get("traits") or {})
        if "pii" in doc:
            if self.cipher is None:
                raise RuntimeError("timeline holds encrypted traits but no PII keys are set")
            clear = self.cipher.decrypt(EncryptedValue.from_document(doc["pii"]), "timeline")
            traits.update(json.loads(clear))
        return TimelineRecord(
            _id=doc["_id"],
            customer_id=doc["customer_id"],
            type=doc["type"],
            name=doc.get("name", ""),
            at=doc["at"],
            source=doc.get("source", ""),
            properties=doc.get("properties") or {},
            traits=traits,
        )

    async def merge(self, merge_id: str, survivor_id: str, merged_ids: Sequence[str]) -> bool:
        """Fold the merged customers' profiles into the survivor's and leave a tombstone
        (``merged_into``) in their place, so events still in flight for them follow.
        Returns ``False`` when this merge was applied already."""
        merged_ids = [m for m in merged_ids if m != survivor_id]
        docs = await self.profiles.find({"_id": {"$in": [survivor_id, *merged_ids]}}).to_list(None)
        by_id = {d["_id"]: d for d in docs}
        survivor = by_id.get(survivor_id)
        if survivor is not None and "merged_into" in survivor:
            # The survivor was itself merged away since: fold into where it went.
            return await self.merge(merge_id, survivor["merged_into"], merged_ids)
        merged = [
            _snapshot(by_id[m]) for m in merged_ids if m in by_id and "merged_into" not in by_id[m]
        ]
        change = fold_merged(None if survivor is None else _snapshot(survivor), merged)
        update: dict[str, Any] = {
            "$push": {"recent_event_ids": {"$each": [merge_id], "$slice": -self.dedupe_window}}
        }
        if change.first_seen is not None:
            update["$min"] = {"first_seen": change.first_seen}
        if change.last_seen is not None:
            update["$max"] = {"last_seen": change.last_seen}
        if change.set_fields:
            update["$set"] = change.set_fields
        if change.inc_fields:
            update["$inc"] = change.inc_fields
        applied = True
        try:
            await self.profiles.update_one(
                {"_id": survivor_id, "recent_event_ids": {"$ne": merge_id}}, update, upsert=True
            )
        except DuplicateKeyError:
            applied = False  # this merge reached the survivor before (a redelivery)
        await self.timeline.update_many(
            {"customer_id": {"$in": merged_ids}}, {"$set": {"customer_id": survivor_id}}
        )
        for merged_id in merged_ids:
            await self.profiles.replace_one(
                {"_id": merged_id}, {"_id": merged_id, "merged_into": survivor_id}, upsert=True
            )
        # After the tombstones: a group call linking a merged id meanwhile sees them then.
        await self._move_group_links(merged_ids, survivor_id)
        return applied

    def _update(self, customer_id: str, deltas: Sequence[ProfileDelta]) -> UpdateOne:
        """One atomic update applying ``deltas`` (one customer's) together with their event
        ids; it matches only while none of those ids was applied.

        Operator form (``$inc``/``$max``/``$push``...) when nothing in it depends on what is
        stored, else an update pipeline (see :meth:`_pipeline`): operators cost the server
        less (``bench_profile.py --store-ab`` compares the two).
        """
        merged = merge(deltas)
        event_ids = [d.event_id for d in deltas]
        change = self._operators(merged, event_ids)
        # For a profile that exists and has seen one of the ids, the upsert collides on _id:
        # that duplicate-key error means "(partly) done already".
        return UpdateOne(
            {
                "_id": customer_id,
                "recent_event_ids": {"$nin": event_ids},
                "merged_into": {"$exists": False},
            },
            change if change is not None else self._pipeline(merged, event_ids),
            upsert=True,
        )

    def _operators(self, merged: MergedDelta, event_ids: list[str]) -> Document | None:
        """The change as update operators, or ``None`` when it needs the pipeline.

        Traits replace a stored value only when newer than ``trait_at``, which operators
        cannot compare. A timed value whose first key is ``at`` (the cart's) can go through
        ``$max``: documents compare key by key, so the later time wins (on an exact tie with
        the stored value, the larger rest). A value with a key operators would read as
        a path (``$x``, ``a.b``) stays literal only in the pipeline."""
        if merged.set_traits or any(
            next(iter(v), "") != "at" for v in merged.timed_fields.values()
        ):
            return None
        values = [
            *merged.set_fields.values(),
            *merged.appends.values(),
            *merged.timed_fields.values(),
        ]
        if not _plain(values):
            return None
        push: Document = {"recent_event_ids": {"$each": event_ids, "$slice": -self.dedupe_window}}
        for path, entries in merged.appends.items():
            push[path] = {"$each": entries}
        if merged.active:
            push["activity"] = {"$each": sorted(merged.active), "$slice": -sessions.KEEP}
        change: Document = {
            "$push": push,
            "$min": {"first_seen": merged.first_seen},
            "$max": {"last_seen": merged.last_seen, **merged.latest, **merged.timed_fields},
        }
        increments = {f"event_counts.{k}": n for k, n in merged.count_increments.items()}
        increments.update(merged.inc_fields)
        if increments:
            change["$inc"] = increments
        if merged.set_fields:
            change["$set"] = dict(merged.set_fields)
        if merged.unions:
            change["$addToSet"] = {p: {"$each": m} for p, m in merged.unions.items()}
        return change

    def _pipeline(self, merged: MergedDelta, event_ids: list[str]) -> list[Document]:
        """The change as an update pipeline, so each trait is compared with the time of the
        one stored (``trait_at``): an older event arriving late does not overwrite a newer
        value. Every value goes in as a literal, so a trait like ``"$x"`` is data, not a
        field path."""
        stage: Document = {
            "recent_event_ids": {
                "$slice": [
                    {"$concatArrays": [{"$ifNull": ["$recent_event_ids", []]}, event_ids]},
                    -self.dedupe_window,
                ]
            },
            "first_seen": _bound("$min", "first_seen", merged.first_seen),
            "last_seen": _bound("$max", "last_seen", merged.last_seen),
        }
        unset: list[str] = []
        for key, value in merged.set_traits.items():
            at = merged.trait_times[key]
            path, stored = self._stored_trait(key, value)
            newer = {"$lt": [{"$ifNull": [f"$trait_at.{key}", _EPOCH]}, at]}
            stage[path] = {"$cond": [newer, {"$literal": stored}, f"${path}"]}
            stage[f"trait_at.{key}"] = _bound("$max", f"trait_at.{key}", at, _EPOCH)
            if path.startswith("pii."):
                unset.append(f"traits.{key}")  # never leave an older clear copy behind
        for path, value in merged.set_fields.items():
            stage[path] = {"$literal": value}
        for path, value in merged.timed_fields.items():
            newer = {"$lt": [{"$ifNull": [f"${path}.at", _EPOCH]}, value["at"]]}
            stage[path] = {"$cond": [newer, {"$literal": value}, f"${path}"]}
        for path, entries in merged.appends.items():
            stage[path] = {"$concatArrays": [{"$ifNull": [f"${path}", []]}, {"$literal": entries}]}
        for path, members in merged.unions.items():
            stage[path] = {"$setUnion": [{"$ifNull": [f"${path}", []]}, {"$literal": members}]}
        for path, at in merged.latest.items():
            stage[path] = _bound("$max", path, at)
        if merged.active:
            stage["activity"] = sessions.append_expression(sorted(merged.active))
        increments = {f"event_counts.{k}": n for k, n in merged.count_increments.items()}
        increments.update(merged.inc_fields)
        for path, n in increments.items():
            stage[path] = {"$add": [{"$ifNull": [f"${path}", 0]}, n]}
        pipeline: list[Document] = [{"$set": stage}]
        if unset:
            pipeline.append({"$unset": unset})
        return pipeline

    async def apply(self, deltas: Sequence[ProfileDelta]) -> int:
        """Apply a batch; returns how many deltas were new (the rest were redeliveries).

        Fast path: one update per customer, all customers in one unordered round trip.
        A customer whose update collides with ids already applied is redone one event at a
        time, in order, so exactly the new ones count.
        """
        by_customer: dict[str, list[ProfileDelta]] = defaultdict(list)
        in_batch: set[str] = set()
        for delta in deltas:
            # The same event twice in one batch (a producer retry) is one event.
            if delta.event_id not in in_batch:
                in_batch.add(delta.event_id)
                by_customer[delta.customer_id].append(delta)
        customers = list(by_customer)
        if not customers:
            return 0
        try:
            await self.profiles.bulk_write(
                [self._update(c, by_customer[c]) for c in customers], ordered=False
            )
            return len(in_batch)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(e["code"] != DUPLICATE_KEY for e in errors):
                raise
            retry = [customers[e["index"]] for e in errors]
        applied = len(in_batch) - sum(len(by_customer[c]) for c in retry)
        for customer in retry:
            applied += await self._apply_one_by_one(customer, by_customer[customer])
        return applied

    async def _apply_one_by_one(self, customer_id: str, deltas: Sequence[ProfileDelta]) -> int:
        tombstone = await self.profiles.find_one({"_id": customer_id}, {"merged_into": 1})
        if tombstone is not None and "merged_into" in tombstone:
            # Events still in flight for a customer merged away belong to the survivor.
            survivor = tombstone["merged_into"]
            return await self.apply([replace(d, customer_id=survivor) for d in deltas])
        applied = 0
        for delta in deltas:
            try:
                await self.profiles.bulk_write([self._update(customer_id, [delta])])
                applied += 1
            except BulkWriteError as exc:
                if exc.details["writeErrors"][0]["code"] != DUPLICATE_KEY:
                    raise
        return applied

    async def get_many(self, customer_ids: Sequence[str]) -> dict[str, StoredProfile]:
        """Profiles by the ids asked for; merged ids map to their survivor's profile."""
        wanted = list(dict.fromkeys(customer_ids))
        # The server checks each document against the whole $in list: keep lists short.
        chunks = [wanted[i : i + 100] for i in range(0, len(wanted), 100)]
        found: dict[str, StoredProfile] = {}
        for chunk in chunks:
            async for doc in self.profiles.find({"_id": {"$in": chunk}}, {"recent_event_ids": 0}):
                if "merged_into" in doc:
                    survivor = await self.get(doc["_id"])
                    if survivor is not None:
                        found[doc["_id"]] = survivor
                else:
                    found[doc["_id"]] = StoredProfile(doc, self.cipher, self.session_timeout)
        return found

    async def export(self, customer_id: str) -> ProfileExport:
        """What profile holds about a customer, for a privacy export: the profile and every
        event still in the timeline (``{}`` if nothing)."""
        profile = await self.get(customer_id)
        if profile is None:
            return ProfileExport()
        events: list[ExportedEvent] = []
        after: tuple[datetime, str] | None = None
        while page := await self.list_timeline(profile.customer_id, 500, after):
            events.extend(
                ExportedEvent(
                    event_id=entry["_id"],
                    type=entry["type"],
                    name=entry["name"],
                    at=entry["at"].isoformat(),
                    source=entry["source"],
                    properties=entry["properties"],
                    traits=entry["traits"],
                )
                for entry in page
            )
            after = (page[-1]["at"], page[-1]["_id"])
        groups = await self.groups_of([profile.customer_id])
        return ProfileExport(
            **profile.export(),
            events=events,
            groups=[g.group_id for g in groups[profile.customer_id]],
        )

    async def announce_tier(self, customer_id: str, tier: str) -> str | None:
        """Record ``tier`` as the one last announced; returns the previous one when it
        differs (``""`` for a first announcement), ``None`` when unchanged. Atomic, so a
        tier change is announced once even if batches are redelivered."""
        before = await self.profiles.find_one_and_update(
            {
                "_id": customer_id,
                "announced_tier": {"$ne": tier},
                "merged_into": {"$exists": False},
            },
            {"$set": {"announced_tier": tier}},
            projection={"announced_tier": 1},
        )
        return None if before is None else str(before.get("announced_tier", ""))

    async def erase(self, customer_id: str) -> bool:
        """Delete the profile and every tombstone that points at it; ``True`` if a profile
        was there."""
        removed = await self.profiles.delete_one({"_id": customer_id})
        merged = [d["_id"] async for d in self.profiles.find({"merged_into": customer_id})]
        await self.profiles.delete_many({"merged_into": customer_id})
        await self.timeline.delete_many({"customer_id": {"$in": [customer_id, *merged]}})
        await self.group_members.delete_many({"customer_id": {"$in": [customer_id, *merged]}})
        return bool(removed.deleted_count)

    async def rotate_keys(self, *, check_only: bool = False) -> list[Tally]:
        """Re-encrypt every PII trait of the profiles and every timeline entry's PII still
        under an old key with the active key, then count what is left. Safe to run again
        after an interruption, and while the service runs (a value changed meanwhile is left
        for the next run); ``check_only`` only counts."""
        if self.cipher is None:
            raise ValueError("key rotation needs the PII keys (LODESTAR_PII_*)")
        return [
            await rotate_values(
                self.profiles,
                Tally("profile", "profiles"),
                self.cipher,
                _profile_pii,
                check_only=check_only,
            ),
            await rotate_values(
                self.timeline,
                Tally("profile", "timeline"),
                self.cipher,
                _timeline_pii,
                check_only=check_only,
            ),
            await rotate_values(
                self.groups,
                Tally("profile", "groups"),
                self.cipher,
                _group_pii,
                check_only=check_only,
            ),
        ]

    # -- groups -------------------------------------------------------------------------

    async def current_ids(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """Each id mapped to the customer it is now (its survivor when merged away)."""
        current = {c: c for c in customer_ids}
        pending = set(current)
        for _ in range(64):
            if not pending:
                break
            moved = {
                d["_id"]: d["merged_into"]
                async for d in self.profiles.find(
                    {"_id": {"$in": sorted(pending)}, "merged_into": {"$exists": True}},
                    {"merged_into": 1},
                )
            }
            for asked, now in current.items():
                if now in moved:
                    current[asked] = moved[now]
            pending = set(moved.values())
        return current

    def _group_update(self, change: GroupChange) -> UpdateOne:
        """One group call applied atomically with its event id, matching only while that id
        was not applied; each trait replaces the stored one only when newer."""
        stage: Document = {
            "recent_event_ids": {
                "$slice": [
                    {"$concatArrays": [{"$ifNull": ["$recent_event_ids", []]}, [change.event_id]]},
                    -self.dedupe_window,
                ]
            },
            "created_at": _bound("$min", "created_at", change.at),
            "updated_at": _bound("$max", "updated_at", change.at),
        }
        unset: list[str] = []
        for key, value in change.traits.items():
            path, stored = self._stored_trait(key, value, _group_context)
            newer = {"$lt": [{"$ifNull": [f"$trait_at.{key}", _EPOCH]}, change.at]}
            stage[path] = {"$cond": [newer, {"$literal": stored}, f"${path}"]}
            stage[f"trait_at.{key}"] = _bound("$max", f"trait_at.{key}", change.at, _EPOCH)
            if path.startswith("pii."):
                unset.append(f"traits.{key}")
        pipeline: list[Document] = [{"$set": stage}]
        if unset:
            pipeline.append({"$unset": unset})
        return UpdateOne(
            {"_id": change.group_id, "recent_event_ids": {"$nin": [change.event_id]}},
            pipeline,
            upsert=True,
        )

    async def apply_groups(self, changes: Sequence[GroupChange]) -> None:
        """Store group calls: the groups' traits and the customers' links to them. A
        redelivered call changes nothing; a customer merged away links its survivor."""
        if not changes:
            return
        current = await self.current_ids(c.customer_id for c in changes)
        for change in changes:
            await self._write_group(change)
        links: dict[tuple[str, str], tuple[datetime, datetime]] = {}
        for change in changes:
            key = (change.group_id, current[change.customer_id])
            first, last = links.get(key, (change.at, change.at))
            links[key] = (min(first, change.at), max(last, change.at))
        await self._write_links([_link(g, c, f, la) for (g, c), (f, la) in links.items()])
        # A merge may have moved the links before these were written: follow it now.
        linked = {c for _, c in links}
        for customer_id, now in (await self.current_ids(linked)).items():
            if now != customer_id:
                await self._move_group_links([customer_id], now)

    async def _write_group(self, change: GroupChange) -> None:
        for _ in range(3):
            try:
                await self.groups.bulk_write([self._group_update(change)])
                return
            except BulkWriteError as exc:
                if exc.details["writeErrors"][0]["code"] != DUPLICATE_KEY:
                    raise
            # Applied before (a redelivery), or another replica created the group meanwhile.
            seen = {"_id": change.group_id, "recent_event_ids": change.event_id}
            if await self.groups.find_one(seen, {"_id": 1}) is not None:
                return
        raise DuplicateKeyError(f"group update kept colliding (event {change.event_id})")

    async def _write_links(self, ops: list[UpdateOne]) -> None:
        if not ops:
            return
        try:
            await self.group_members.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(e["code"] != DUPLICATE_KEY for e in errors):
                raise
            # Two replicas inserted the same new link: the second now finds it and updates.
            await self.group_members.bulk_write([ops[e["index"]] for e in errors], ordered=False)

    async def _move_group_links(self, merged_ids: Sequence[str], survivor_id: str) -> None:
        """The merged customers' group links become the survivor's (idempotent)."""
        if not merged_ids:
            return
        docs = await self.group_members.find({"customer_id": {"$in": list(merged_ids)}}).to_list(
            None
        )
        await self._write_links(
            [_link(d["group_id"], survivor_id, d["joined_at"], d["last_at"]) for d in docs]
        )
        await self.group_members.delete_many({"customer_id": {"$in": list(merged_ids)}})

    async def _member_counts(self, group_ids: Sequence[str]) -> dict[str, int]:
        counts = await asyncio.gather(
            *(self.group_members.count_documents({"group_id": g}) for g in group_ids)
        )
        return dict(zip(group_ids, counts, strict=True))

    def _group(self, doc: Document, members: int) -> StoredGroup:
        traits = {original_name(k): v for k, v in (doc.get("traits") or {}).items()}
        for key, encrypted in (doc.get("pii") or {}).items():
            if self.cipher is None:
                raise RuntimeError("a group holds encrypted traits but no PII keys are set")
            name = original_name(key)
            clear = self.cipher.decrypt(
                EncryptedValue.from_document(encrypted), _group_context(name)
            )
            traits[name] = json.loads(clear)
        return StoredGroup(
            group_id=doc["_id"],
            traits=traits,
            member_count=members,
            created_at=doc.get("created_at"),
            updated_at=doc.get("updated_at"),
        )

    async def get_group(self, group_id: str) -> StoredGroup | None:
        """The group ``group_id``, or ``None`` before its first group call."""
        doc = await self.groups.find_one({"_id": group_id}, {"recent_event_ids": 0})
        if doc is None:
            return None
        return self._group(doc, (await self._member_counts([group_id]))[group_id])

    async def groups_of(
        self, customer_ids: Sequence[str], after: str = "", most: int | None = None
    ) -> dict[str, list[StoredGroup]]:
        """The groups of each id asked for (merged ids: their survivor's), by group id: those
        after the group id ``after``, at most ``most`` per customer."""
        current = await self.current_ids(customer_ids)
        links: dict[str, set[str]] = defaultdict(set)
        wanted = sorted(set(current.values()))
        for i in range(0, len(wanted), 50):
            query: Document = {"customer_id": {"$in": wanted[i : i + 50]}}
            if after:
                query["group_id"] = {"$gt": after}
            async for doc in self.group_members.find(query, {"group_id": 1, "customer_id": 1}):
                links[doc["customer_id"]].add(doc["group_id"])
        if most is not None:
            links = defaultdict(set, {c: set(sorted(g)[:most]) for c, g in links.items()})
        group_ids = sorted(set().union(*links.values())) if links else []
        counts = await self._member_counts(group_ids)
        groups: dict[str, StoredGroup] = {}
        for i in range(0, len(group_ids), 50):
            async for doc in self.groups.find(
                {"_id": {"$in": group_ids[i : i + 50]}}, {"recent_event_ids": 0}
            ):
                groups[doc["_id"]] = self._group(doc, counts[doc["_id"]])
        return {
            asked: [groups[g] for g in sorted(links.get(now, ())) if g in groups]
            for asked, now in current.items()
        }

    async def get(self, customer_id: str) -> StoredProfile | None:
        """The profile of ``customer_id``, or ``None``."""
        for _ in range(64):
            doc = await self.profiles.find_one({"_id": customer_id}, {"recent_event_ids": 0})
            if doc is None:
                return None
            if "merged_into" not in doc:
                return StoredProfile(doc, self.cipher, self.session_timeout)
            customer_id = doc["merged_into"]
        return None


async def rotate_values(
    collection: AsyncIOMotorCollection[Document],
    tally: Tally,
    cipher: FieldCipher,
    fields: EncryptedFields,
    *,
    check_only: bool,
    field: str = "pii",
) -> Tally:
    """Key rotation of one collection: each value ``fields`` finds (in the documents that
    have ``field``) that is under an old key is replaced by its re-encryption, only while it
    is still the value read, so a newer write is never overwritten. Then a second pass
    counts what is left into ``tally``."""
    wanted: Document = {field: {"$exists": True}}
    only: Document = {field: 1}
    if not check_only:
        pending: list[UpdateOne] = []
        async for doc in collection.find(wanted, only):
            for path, stored, context in fields(doc):
                found = examine(cipher, stored, context)
                if found.replacement is not None:
                    pending.append(
                        UpdateOne(
                            {"_id": doc["_id"], f"{path}.n": found.nonce},
                            {"$set": {path: found.replacement.to_document()}},
                        )
                    )
            if len(pending) >= ROTATION_BATCH:
                tally.rotated += await _write_rotated(collection, pending)
                pending = []
        tally.rotated += await _write_rotated(collection, pending)
    async for doc in collection.find(wanted, only):
        for _, stored, context in fields(doc):
            tally.count(examine(cipher, stored, context))
    return tally


async def _write_rotated(
    collection: AsyncIOMotorCollection[Document], updates: list[UpdateOne]
) -> int:
    if not updates:
        return 0
    result = await collection.bulk_write(updates, ordered=False)
    return int(result.matched_count)


def _profile_pii(doc: Document) -> Iterable[tuple[str, object, str]]:
    for key, stored in (doc.get("pii") or {}).items():
        yield f"pii.{key}", stored, _context(original_name(key))


def _group_pii(doc: Document) -> Iterable[tuple[str, object, str]]:
    for key, stored in (doc.get("pii") or {}).items():
        yield f"pii.{key}", stored, _group_context(original_name(key))


def _timeline_pii(doc: Document) -> Iterable[tuple[str, object, str]]:
    if "pii" in doc:
        yield "pii", doc["pii"], "timeline"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _plain(value: object) -> bool:
    """Whether no key in ``value`` (at any depth) starts with ``$`` or holds a ``.``."""
    if isinstance(value, dict):
        return all(
            not (str(k).startswith("$") or "." in str(k)) and _plain(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return True


def _bound(operator: str, path: str, value: datetime, missing: datetime | None = None) -> Document:
    """``min``/``max`` of a stored time and ``value`` (``value`` when none is stored)."""
    return {operator: [{"$ifNull": [f"${path}", missing or value]}, value]}


def _context(trait: str) -> str:
    return f"trait:{trait}"


def _group_context(trait: str) -> str:
    return f"group-trait:{trait}"


def _member_id(group_id: str, customer_id: str) -> str:
    """One link's ``_id``: JSON, so no group or customer id can make two links collide."""
    return json.dumps([group_id, customer_id])


def _link(group_id: str, customer_id: str, first: datetime, last: datetime) -> UpdateOne:
    """Link a customer to a group (idempotent); keeps when it first and last happened."""
    return UpdateOne(
        {"_id": _member_id(group_id, customer_id)},
        {
            "$setOnInsert": {"group_id": group_id, "customer_id": customer_id},
            "$min": {"joined_at": first},
            "$max": {"last_at": last},
        },
        upsert=True,
    )


def _snapshot(doc: Document) -> ProfileSnapshot:
    fields = {f"traits.{k}": v for k, v in (doc.get("traits") or {}).items()}
    fields.update({f"pii.{k}": v for k, v in (doc.get("pii") or {}).items()})
    fields.update({f"orders.{k}": v for k, v in (doc.get("orders") or {}).items()})
    stamps = {}
    for key, at in (doc.get("trait_at") or {}).items():
        stamps[f"traits.{key}"] = stamps[f"pii.{key}"] = at
    counters = {f"event_counts.{k}": int(v) for k, v in (doc.get("event_counts") or {}).items()}
    counters.update({f"loyalty.{k}": int(v) for k, v in (doc.get("loyalty") or {}).items()})
    return ProfileSnapshot(
        customer_id=doc["_id"],
        fields=fields,
        counters=counters,
        stamps=stamps,
        first_seen=doc.get("first_seen"),
        last_seen=doc.get("last_seen"),
        activity=list(doc.get("activity") or []),
    )
