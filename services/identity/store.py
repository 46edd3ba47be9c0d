"""MongoDB persistence of the identity graph (database ``<prefix>_identity``).

Collections:
- ``identifiers``: ``_id`` is ``<type>:<key>`` (unique: an identifier belongs to exactly one
  customer). For e-mail and phone the key is a keyed blind index and the value is stored only
  AES-GCM encrypted (``enc``); other types keep their value in clear.
- ``customers``: created time, status (active / merged / erased), ``merged_into``, and a
  version checked on every change (optimistic concurrency between replicas).
- ``merges``: the audit trail of merges; ``conflicts``: identifiers dropped by the rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import InsertOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

from services.identity.graph import CustomerNode, GraphIdentifier
from services.identity.plan import (
    ACTIVE,
    ERASED,
    MERGED,
    ConcurrentChange,
    ConflictRecord,
    Loaded,
    Merge,
    NewCustomer,
    NewIdentifier,
    Plan,
)
from services.identity.records import MergeRecord, StoredIdentifier
from services.identity.rules import IdentityRules
from services.platform.crypto import EncryptedValue, FieldCipher
from services.platform.mongo import Document, IndexSpec, ensure_indexes
from services.platform.rotation import Examined, Tally, examine

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# Re-encrypted values written per round trip during key rotation.
ROTATION_BATCH = 500
# SecantusDB answers large $in queries slowly; many small ones in parallel are much faster.
IN_CHUNK = 50

INDEXES = (
    IndexSpec("identifiers", [("customer_id", 1)]),
    IndexSpec("merges", [("survivor_id", 1), ("at", -1)]),
    IndexSpec("merges", [("merged_ids", 1)]),
    IndexSpec("conflicts", [("customer_id", 1)]),
)


def storage_key(
    cipher: FieldCipher, rules: IdentityRules, type_: str, value: str
) -> GraphIdentifier:
    """An identifier's ``_id``: ``<type>:<value>``, or ``<type>:<blind index>`` for PII."""
    if type_ in rules.pii_types:
        return GraphIdentifier(type_, f"{type_}:{cipher.blind_index(value, type_)}")
    return GraphIdentifier(type_, f"{type_}:{value}")


async def _find_in(
    collection: AsyncIOMotorCollection[Document],
    field_name: str,
    values: Iterable[str],
    projection: Mapping[str, int] | None = None,
) -> list[Document]:
    unique = sorted(set(values))
    chunks = [unique[i : i + IN_CHUNK] for i in range(0, len(unique), IN_CHUNK)]
    results = await asyncio.gather(
        *(
            collection.find({field_name: {"$in": chunk}}, projection).to_list(None)
            for chunk in chunks
        )
    )
    return [doc for chunk in results for doc in chunk]


class IdentityStore:
    """The identity graph in MongoDB."""

    def __init__(
        self, db: AsyncIOMotorDatabase[Document], cipher: FieldCipher, rules: IdentityRules
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.rules = rules
        self.identifiers = db["identifiers"]
        self.customers = db["customers"]
        self.merges = db["merges"]
        self.conflicts = db["conflicts"]

    async def ensure_indexes(self) -> None:
        """Create the collections' indexes."""
        await ensure_indexes(self.db, INDEXES)

    # -- keys and values ------------------------------------------------------------------

    def key_of(self, type_: str, value: str) -> GraphIdentifier:
        """The graph identifier of a normalised value (blind index for PII types)."""
        return storage_key(self.cipher, self.rules, type_, value)

    def identifier_of(self, type_: str, raw: str) -> GraphIdentifier:
        """The graph identifier of a raw value, normalised by the rules first
        (:class:`InvalidArgument` naming what is wrong with it)."""
        return self.key_of(type_, self.rules.normalize(type_, raw))

    def _value_fields(self, identifier: GraphIdentifier, value: str) -> Document:
        if identifier.type in self.rules.pii_types:
            return {"enc": self.cipher.encrypt(value, identifier.type).to_document()}
        return {"value": value}

    def _clear_value(self, doc: Document) -> str:
        if "enc" in doc:
            return self.cipher.decrypt(EncryptedValue.from_document(doc["enc"]), doc["type"])
        return str(doc["value"])

    # -- reading the part of the graph a batch touches -------------------------------------

    async def load_owners(self, keys: Iterable[str]) -> Loaded:
        """Who owns each of ``keys``, and when each was last seen."""
        loaded = Loaded()
        for doc in await _find_in(
            self.identifiers, "_id", keys, {"customer_id": 1, "last_seen": 1}
        ):
            loaded.owners[doc["_id"]] = doc["customer_id"]
            loaded.last_seen[doc["_id"]] = doc["last_seen"]
        return loaded

    async def load_customers(self, loaded: Loaded, wanted: set[str]) -> None:
        """Load customers in full (created time, version, every identifier), following
        merges to the survivors, because the batch may change them."""
        if not wanted:
            return
        wanted = set(wanted)
        seen: set[str] = set()
        while wanted - seen:
            batch = wanted - seen
            seen |= batch
            found = {d["_id"]: d for d in await _find_in(self.customers, "_id", batch)}
            for customer_id in batch:
                doc = found.get(customer_id)
                if doc is not None and doc["status"] == MERGED:
                    loaded.redirects[customer_id] = doc["merged_into"]
                    wanted.add(doc["merged_into"])
        finals = {c for c in wanted if c not in loaded.redirects}
        docs = {d["_id"]: d for d in await _find_in(self.customers, "_id", finals)}
        members = await _find_in(
            self.identifiers,
            "customer_id",
            finals | set(loaded.redirects),
            {"type": 1, "customer_id": 1, "first_seen": 1},
        )
        by_customer: dict[str, list[Document]] = {}
        for doc in members:
            by_customer.setdefault(loaded.final(doc["customer_id"]), []).append(doc)
        for customer_id in finals:
            idents = by_customer.get(customer_id, [])
            doc = docs.get(customer_id)
            if doc is None:
                # Identifiers written before their customer (a crash in between): heal it.
                created = min(
                    (d["first_seen"] for d in idents), default=datetime.min.replace(tzinfo=UTC)
                )
                node = CustomerNode(customer_id, created, 0, is_new=True)
            else:
                node = CustomerNode(customer_id, doc["created_at"], doc["version"])
            node.identifiers = {d["_id"]: GraphIdentifier(d["type"], d["_id"]) for d in idents}
            loaded.customers[customer_id] = node

    # -- writing a batch's plan -----------------------------------------------------------

    def _identifier_document(self, new: NewIdentifier) -> Document:
        """A new ``identifiers`` document (the value encrypted for PII types)."""
        return {
            "_id": new.identifier.key,
            "customer_id": new.customer_id,
            "type": new.identifier.type,
            **self._value_fields(new.identifier, new.value),
            "first_seen": new.at,
            "last_seen": new.at,
            "source": new.source,
        }

    async def apply(self, plan: Plan) -> None:
        """Write a plan. Identifiers go first: their unique ``_id`` settles races between
        replicas. Then merges are version-checked, and customers that only gained
        identifiers are checked to be still active: if a merge elsewhere took one, its
        identifiers written here might have missed the move, so the batch starts again.
        Raises :class:`ConcurrentChange` when another replica got there first."""
        new_customers = {c.customer_id for c in plan.new_customers}
        await self._insert_identifiers(
            [self._identifier_document(i) for i in plan.new_identifiers], new_customers
        )
        await self._insert_ignoring_duplicates(
            self.customers, [_customer_document(c) for c in plan.new_customers]
        )
        await self._check_and_update_customers(plan)
        await self._check_still_active(plan.grown - set(plan.touched))
        moves = [
            UpdateMany({"customer_id": {"$in": sources}}, {"$set": {"customer_id": survivor}})
            for survivor, sources in plan.moves.items()
        ]
        if moves:
            await self.identifiers.bulk_write(moves, ordered=False)
        await asyncio.gather(
            self._insert_ignoring_duplicates(
                self.merges, [_merge_document(m) for m in plan.merges]
            ),
            self._insert_ignoring_duplicates(
                self.conflicts, [_conflict_document(c) for c in plan.conflicts]
            ),
        )

    async def _check_still_active(self, customer_ids: set[str]) -> None:
        if not customer_ids:
            return
        docs = await _find_in(self.customers, "_id", customer_ids, {"status": 1})
        if len(docs) != len(customer_ids) or any(d["status"] != ACTIVE for d in docs):
            raise ConcurrentChange("a customer that gained identifiers was merged meanwhile")

    async def touch_last_seen(self, seen: Mapping[str, datetime]) -> None:
        """Move identifiers' last-seen forward (never back)."""
        if not seen:
            return
        # One update per chunk at the latest time: last-seen is kept at the configured
        # resolution anyway, and per-document updates cost far more.
        latest = max(seen.values())
        keys = sorted(seen)
        await self.identifiers.bulk_write(
            [
                UpdateMany(
                    {"_id": {"$in": keys[i : i + IN_CHUNK]}}, {"$max": {"last_seen": latest}}
                )
                for i in range(0, len(keys), IN_CHUNK)
            ],
            ordered=False,
        )

    async def _insert_identifiers(self, docs: list[Document], new_customers: set[str]) -> None:
        if not docs:
            return
        try:
            await self.identifiers.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details["writeErrors"]
            if any(e["code"] != DUPLICATE_KEY for e in errors):
                raise
            clashes = {docs[e["index"]]["_id"]: docs[e["index"]]["customer_id"] for e in errors}
            stored = await _find_in(self.identifiers, "_id", clashes, {"customer_id": 1})
            # Our own earlier attempt (a redelivery) is fine; someone else's is a race lost.
            if all(d["customer_id"] == clashes[d["_id"]] for d in stored):
                return
            # Take back what this attempt gave to customers it was about to create, so the
            # retry attaches them to the winner instead of merging a customer nobody saw.
            ours = [d["_id"] for d in docs if d["_id"] not in clashes]
            await self.identifiers.delete_many(
                {"_id": {"$in": ours}, "customer_id": {"$in": sorted(new_customers)}}
            )
            raise ConcurrentChange("identifier taken by another customer") from None

    async def _insert_ignoring_duplicates(
        self, collection: AsyncIOMotorCollection[Document], docs: list[Document]
    ) -> None:
        if not docs:
            return
        try:
            await collection.bulk_write([InsertOne(d) for d in docs], ordered=False)
        except BulkWriteError as exc:
            if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise

    async def _check_and_update_customers(self, plan: Plan) -> None:
        ops = []
        for customer_id, version in plan.touched.items():
            change: dict[str, Any] = {"$inc": {"version": 1}}
            if customer_id in plan.merged_into:
                change["$set"] = {"status": MERGED, "merged_into": plan.merged_into[customer_id]}
            ops.append(
                UpdateOne({"_id": customer_id, "status": ACTIVE, "version": version}, change)
            )
        if not ops:
            return
        result = await self.customers.bulk_write(ops, ordered=False)
        if result.matched_count != len(ops):
            raise ConcurrentChange(
                f"{len(ops) - result.matched_count} customer(s) changed by another replica"
            )

    # -- reads for the API ----------------------------------------------------------------

    async def owner_of(self, identifier: GraphIdentifier) -> str | None:
        """The active customer an identifier belongs to (following merges), if any."""
        doc = await self.identifiers.find_one({"_id": identifier.key}, {"customer_id": 1})
        if doc is None:
            return None
        return await self.current_id(str(doc["customer_id"]))

    async def owners_of(self, identifiers: Sequence[GraphIdentifier]) -> dict[str, str]:
        """Many :meth:`owner_of` in a few round trips: key -> active customer id."""
        docs = await _find_in(
            self.identifiers, "_id", [i.key for i in identifiers], {"customer_id": 1}
        )
        raw = {d["_id"]: d["customer_id"] for d in docs}
        current = {c: await self.current_id(c) for c in set(raw.values())}
        return {k: current[c] for k, c in raw.items() if current[c] is not None}  # type: ignore[misc]

    async def current_id(self, customer_id: str) -> str | None:
        """The active customer ``customer_id`` is now (itself, or its survivor); ``None``
        when unknown or erased."""
        for _ in range(64):
            doc = await self.customers.find_one(
                {"_id": customer_id}, {"status": 1, "merged_into": 1}
            )
            if doc is None:
                # Identifiers may briefly exist before their customer document.
                exists = await self.identifiers.find_one({"customer_id": customer_id}, {"_id": 1})
                return customer_id if exists else None
            if doc["status"] == ACTIVE:
                return customer_id
            if doc["status"] == ERASED:
                return None
            customer_id = doc["merged_into"]
        return None

    async def identities(self, customer_id: str) -> list[StoredIdentifier]:
        """Every identifier of a customer, decrypted, in a stable order."""
        docs = await self.identifiers.find({"customer_id": customer_id}).to_list(None)
        found = [
            StoredIdentifier(
                d["type"], self._clear_value(d), d["first_seen"], d["last_seen"], d["source"]
            )
            for d in docs
        ]
        return sorted(found, key=lambda i: (self.rules.rank(i.type), i.value))

    async def current_ids(self, customer_ids: Sequence[str]) -> dict[str, str]:
        """:meth:`current_id` of many ids in a few round trips; unknown and erased ids are
        left out."""
        docs = await _find_in(self.customers, "_id", customer_ids, {"status": 1})
        active = {d["_id"] for d in docs if d["status"] == ACTIVE}
        # Merged, erased or not yet created: rare, so one by one.
        others = [c for c in dict.fromkeys(customer_ids) if c not in active]
        resolved = await asyncio.gather(*(self.current_id(c) for c in others))
        current = {c: c for c in customer_ids if c in active}
        current.update({c: now for c, now in zip(others, resolved, strict=True) if now})
        return current

    async def identities_of(
        self, customer_ids: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, list[StoredIdentifier]]]:
        """:meth:`identities` of many customers: asked id -> current id, and current id ->
        its identifiers."""
        current = await self.current_ids(customer_ids)
        docs = await _find_in(self.identifiers, "customer_id", current.values())
        found: dict[str, list[StoredIdentifier]] = defaultdict(list)
        for d in docs:
            found[d["customer_id"]].append(
                StoredIdentifier(
                    d["type"], self._clear_value(d), d["first_seen"], d["last_seen"], d["source"]
                )
            )
        for identifiers in found.values():
            identifiers.sort(key=lambda i: (self.rules.rank(i.type), i.value))
        return current, dict(found)

    async def merge_history(self, customer_id: str) -> list[MergeRecord]:
        """Merges this customer survived or was merged in, newest first."""
        cursor = self.merges.find(
            {"$or": [{"survivor_id": customer_id}, {"merged_ids": customer_id}]}
        ).sort("at", -1)
        return [_merge_record(d) for d in await cursor.to_list(None)]

    async def erase(self, customer_id: str, at: datetime) -> int:
        """Remove every identifier of the customer (and of customers merged into it), its
        recorded conflicts, and mark it erased; returns how many identifiers went."""
        merged = [
            d["_id"]
            for d in await self.customers.find({"merged_into": customer_id}, {"_id": 1}).to_list(
                None
            )
        ]
        owners = [customer_id, *merged]
        removed = await self.identifiers.delete_many({"customer_id": {"$in": owners}})
        await self.conflicts.delete_many({"customer_id": {"$in": owners}})
        await self.customers.update_one(
            {"_id": customer_id},
            {"$set": {"status": ERASED, "erased_at": at}, "$inc": {"version": 1}},
            upsert=True,
        )
        return int(removed.deleted_count)

    async def rotate_keys(self, *, check_only: bool = False) -> Tally:
        """Re-encrypt every PII value still under an old key with the active key, move every
        identifier whose blind index changed (a new index key) to its current ``_id``, then
        count what is left. Safe to run again after an interruption, and while the service
        runs (a value changed meanwhile is left for the next run); ``check_only`` only
        counts."""
        tally = Tally("identity", "identifiers")
        if not check_only:
            tally.rotated = await self._rotate_identifiers()
        async for doc in self._pii_identifiers():
            found = examine(self.cipher, doc.get("enc"), doc["type"])
            stale = (
                found.clear is not None and self.key_of(doc["type"], found.clear).key != doc["_id"]
            )
            tally.count(found, stale_index=stale)
        return tally

    def _pii_identifiers(self) -> AsyncIterator[Document]:
        return self.identifiers.find({"type": {"$in": sorted(self.rules.pii_types)}})

    async def _rotate_identifiers(self) -> int:
        rotated = 0
        pending: list[UpdateOne] = []
        async for doc in self._pii_identifiers():
            found = examine(self.cipher, doc.get("enc"), doc["type"])
            if found.clear is None:
                continue  # the counting pass reports it as unreadable
            key = self.key_of(doc["type"], found.clear).key
            if key != doc["_id"]:
                rotated += await self._reindex(doc, key, found)
            elif found.replacement is not None:
                pending.append(_reencrypt(doc["_id"], found.nonce, found.replacement))
                if len(pending) >= ROTATION_BATCH:
                    rotated += await self._write_rotated(pending)
                    pending = []
        return rotated + await self._write_rotated(pending)

    async def _reindex(self, doc: Document, key: str, found: Examined) -> int:
        """Move one identifier to the ``_id`` its value has under the current index key: write
        the new document first, then drop the old one, so a crash in between loses nothing."""
        replacement = {**doc, "_id": key}
        if found.replacement is not None:
            replacement["enc"] = found.replacement.to_document()
        await self._insert_ignoring_duplicates(self.identifiers, [replacement])
        holder = await self.identifiers.find_one({"_id": key}, {"customer_id": 1, "enc": 1})
        if holder is None or holder["customer_id"] != doc["customer_id"]:
            # Events resolved under the new index meanwhile gave the value to another customer:
            # both stay, and the counting pass reports the old one as left.
            log.warning(
                "identifier not re-indexed: its new key belongs to another customer",
                extra={"fields": {"type": doc["type"]}},
            )
            return 0
        await self.identifiers.delete_one({"_id": doc["_id"]})
        # Written by an interrupted earlier run, the new document may still be under an old key.
        again = examine(self.cipher, holder.get("enc"), doc["type"])
        if again.replacement is not None:
            await self._write_rotated([_reencrypt(key, again.nonce, again.replacement)])
        return 1

    async def _write_rotated(self, updates: list[UpdateOne]) -> int:
        if not updates:
            return 0
        result = await self.identifiers.bulk_write(updates, ordered=False)
        return int(result.matched_count)


def _customer_document(new: NewCustomer) -> Document:
    """A new ``customers`` document: active, or merged already by the batch creating it."""
    status: Document = (
        {"status": ACTIVE}
        if new.merged_into is None
        else {"status": MERGED, "merged_into": new.merged_into}
    )
    return {"_id": new.customer_id, "created_at": new.created_at, "version": 0, **status}


def _merge_document(merge: Merge) -> Document:
    """A ``merges`` audit document."""
    return {
        "_id": merge.merge_id,
        "survivor_id": merge.survivor_id,
        "merged_ids": merge.merged_ids,
        "caused_by_event_id": merge.caused_by_event_id,
        "at": merge.at,
    }


def _merge_record(doc: Document) -> MergeRecord:
    """A ``merges`` document read back as the record the API shows."""
    return MergeRecord(
        _id=doc["_id"],
        survivor_id=doc["survivor_id"],
        merged_ids=list(doc["merged_ids"]),
        caused_by_event_id=doc["caused_by_event_id"],
        at=doc["at"],
    )


def _conflict_document(record: ConflictRecord) -> Document:
    """A recorded conflict; the identifier appears by key only (blind for PII)."""
    conflict = record.conflict
    return {
        "_id": f"{record.event_id}:{conflict.identifier.key}",
        "event_id": record.event_id,
        "customer_id": record.customer_id,
        "type": conflict.identifier.type,
        "key": conflict.identifier.key,
        "reason": conflict.reason,
        "at": record.at,
    }


def _reencrypt(identifier_key: str, nonce: bytes | None, value: EncryptedValue) -> UpdateOne:
    """Store ``value`` in place of the value examined, only while that is still there."""
    return UpdateOne(
        {"_id": identifier_key, "enc.n": nonce}, {"$set": {"enc": value.to_document()}}
    )
