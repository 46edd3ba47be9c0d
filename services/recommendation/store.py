"""MongoDB persistence of recommendation (database ``<prefix>_recommendation``).

- ``interactions``: one document per (event, product): customer, item, kind, raw value, time;
  the key makes a redelivered event a no-op.
- ``items``: per product, the properties last seen in events (``seen``) and the catalog's
  (``catalog``), which win; ``updated_at`` lets replicas reload only what changed. Seen
  properties are written when they change: the store remembers what it last wrote per item
  (bounded, and re-written after ``SEEN_REFRESH``), so a product seen in every batch with the
  same name and price costs no write.
- ``models``: one document per model version: metadata and the GridFS id of its artifact.
- ``artifacts.files`` / ``artifacts.chunks``: the GridFS bucket holding the artifacts.
- ``leases``: who trains now, so replicas on a schedule do not train at once.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

from motor.motor_asyncio import AsyncIOMotorDatabase, AsyncIOMotorGridFSBucket
from pymongo import DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.platform.mongo import Document, IndexSpec, ensure_indexes
from services.recommendation.catalog import merged
from services.recommendation.interactions import Interaction, ItemFields, ItemProperties
from services.recommendation.model import (
    FactorModel,
    StoredModel,
    info_document,
    info_from_document,
)

DUPLICATE_KEY = 11000
BUCKET = "artifacts"
# One GridFS chunk: well under the 16 MB document limit, few round trips.
CHUNK_BYTES = 4 * 1024 * 1024
# How far another writer's clock may lag behind this reader's.
CLOCK_MARGIN = timedelta(minutes=2)
# Items whose last written seen properties are remembered (oldest written forgotten first).
SEEN_CACHE_ITEMS = 50_000
# Unchanged seen properties are written again after this long (another replica may have
# written others meanwhile; later ones win within this bound).
SEEN_REFRESH = timedelta(minutes=10)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def interaction_document(interaction: Interaction) -> Document:
    """How one interaction is stored."""
    return {
        "_id": interaction.key,
        "event_id": interaction.event_id,
        "customer_id": interaction.customer_id,
        "item_id": interaction.item_id,
        "kind": interaction.kind,
        "value": interaction.value,
        "at": interaction.at,
        "order_id": interaction.order_id,
    }


def interaction_from(doc: Document) -> Interaction:
    """An interaction read back."""
    return Interaction(
        event_id=doc["event_id"],
        customer_id=doc["customer_id"],
        item_id=doc["item_id"],
        kind=doc["kind"],
        value=float(doc["value"]),
        at=_utc(doc["at"]),
        order_id=doc.get("order_id", ""),
    )


class RecommendationStore:
    """Interactions, item properties, model versions with their artifacts, training leases."""

    def __init__(
        self, db: AsyncIOMotorDatabase[Document], seen_cache_items: int = SEEN_CACHE_ITEMS
    ) -> None:
        self.db = db
        # item id -> (seen properties this store last wrote, when): unchanged ones are skipped.
        self._seen: dict[str, tuple[ItemFields, datetime]] = {}
        self._seen_cache_items = seen_cache_items
        self.interactions = db["interactions"]
        self.items = db["items"]
        self.models = db["models"]
        self.leases = db["leases"]
        self.artifacts = AsyncIOMotorGridFSBucket(db, bucket_name=BUCKET)

    async def ensure_indexes(self) -> None:
        """Interactions per customer and by time, items by change time, models by version."""
        await ensure_indexes(
            self.db,
            [
                IndexSpec("interactions", [("customer_id", 1)]),
                IndexSpec("interactions", [("at", 1)]),
                IndexSpec("items", [("updated_at", 1)]),
                IndexSpec("models", [("version", -1)], unique=True),
            ],
        )

    # ---- interactions -------------------------------------------------------------------

    async def save_interactions(self, interactions: Sequence[Interaction]) -> None:
        """Store interactions; one already stored (a redelivery) is left as it is."""
        if not interactions:
            return
        docs = list({i.key: interaction_document(i) for i in interactions}.values())
        try:
            await self.interactions.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise

    async def stream_interactions(
        self, since: datetime | None = None
    ) -> AsyncIterator[Interaction]:
        """Every interaction (at or after ``since``), in batches from the server."""
        query: Document = {} if since is None else {"at": {"$gte": since}}
        async for doc in self.interactions.find(query).batch_size(10_000):
            yield interaction_from(doc)

    async def count_interactions(self) -> int:
        """How many interactions are stored."""
        return await self.interactions.estimated_document_count()

    async def interactions_of(self, customer_id: str) -> list[Interaction]:
        """One customer's interactions, oldest first."""
        cursor = self.interactions.find({"customer_id": customer_id}).sort("at", 1)
        return [interaction_from(d) async for d in cursor]

    async def customer_ids(self) -> set[str]:
        """Every customer with an interaction."""
        return {str(c) for c in await self.interactions.distinct("customer_id")}

    async def erase(self, customer_id: str) -> int:
        """Delete the customer's interactions; returns how many there were."""
        result = await self.interactions.delete_many({"customer_id": customer_id})
        return int(result.deleted_count)

    async def move_customer(self, merged_id: str, survivor_id: str) -> None:
        """A merged customer's interactions now belong to the survivor."""
        await self.interactions.update_many(
            {"customer_id": merged_id}, {"$set": {"customer_id": survivor_id}}
        )

    # ---- items --------------------------------------------------------------------------

    async def save_seen_items(self, items: Sequence[ItemProperties], at: datetime) -> None:
        """Remember the properties events carried (later ones win; the catalog wins over all).
        An item whose properties are those this store wrote less than ``SEEN_REFRESH`` ago
        is not written again."""
        known: dict[str, ItemFields] = {}
        for item in items:
            known.setdefault(item.item_id, ItemFields()).update(item.fields())
        changed = {
            item_id: fields
            for item_id, fields in known.items()
            if fields and not self._seen_unchanged(item_id, fields, at)
        }
        writes = [
            UpdateOne(
                {"_id": item_id},
                {"$set": {**{f"seen.{k}": v for k, v in fields.items()}, "updated_at": at}},
                upsert=True,
            )
            for item_id, fields in changed.items()
        ]
        if writes:
            await self.items.bulk_write(writes, ordered=False)
            self._remember_seen(changed, at)

    def _seen_unchanged(self, item_id: str, fields: ItemFields, at: datetime) -> bool:
        cached = self._seen.get(item_id)
        if cached is None or at - cached[1] >= SEEN_REFRESH:
            return False
        written: Mapping[str, object] = cached[0]
        return all(k in written and written[k] == v for k, v in fields.items())

    def _remember_seen(self, written: dict[str, ItemFields], at: datetime) -> None:
        if self._seen_cache_items <= 0:
            return
        for item_id, fields in written.items():
            cached = self._seen.pop(item_id, None)
            if cached is not None and at - cached[1] < SEEN_REFRESH:
                # Keeps the older time: every remembered field is re-written in time.
                remembered = ItemFields(**cached[0])
                remembered.update(fields)
                self._seen[item_id] = (remembered, cached[1])
            else:
                self._seen[item_id] = (ItemFields(**fields), at)
        while len(self._seen) > self._seen_cache_items:
            del self._seen[next(iter(self._seen))]

    async def import_catalog(self, items: Sequence[ItemProperties], at: datetime) -> int:
        """Replace the catalog properties of these items; returns how many were written."""
        unique = {i.item_id: i for i in items}
        writes = [
            UpdateOne(
                {"_id": item.item_id},
                {"$set": {"catalog": item.fields(), "imported_at": at, "updated_at": at}},
                upsert=True,
            )
            for item in unique.values()
        ]
        if writes:
            await self.items.bulk_write(writes, ordered=False)
        return len(writes)

    async def items_changed_since(
        self, since: datetime | None
    ) -> tuple[dict[str, ItemProperties], datetime | None]:
        """Items changed after ``since`` (every item when ``None``), and the newest change.
        Writers' clocks may lag: a margin before ``since`` is read again."""
        query: Document = {} if since is None else {"updated_at": {"$gt": since - CLOCK_MARGIN}}
        found: dict[str, ItemProperties] = {}
        newest = since
        async for doc in self.items.find(query).batch_size(10_000):
            found[doc["_id"]] = merged(doc["_id"], doc.get("seen") or {}, doc.get("catalog") or {})
            changed = doc.get("updated_at")
            if changed is not None and (newest is None or _utc(changed) > newest):
                newest = _utc(changed)
        return found, newest

    # ---- models -------------------------------------------------------------------------

    async def next_version(self) -> int:
        """One more than the newest stored version."""
        newest = await self.models.find_one({}, {"version": 1}, sort=[("version", DESCENDING)])
        return 1 if newest is None else int(newest["version"]) + 1

    async def save_model(self, model: FactorModel) -> None:
        """Store the artifact in GridFS, then its metadata (which makes it visible)."""
        file_id = await self._upload(model)
        doc: Document = {
            **info_document(model.info),
            "_id": model.info.version,
            "file_id": file_id,
        }
        try:
            await self.models.insert_one(doc)
        except DuplicateKeyError:
            await self.artifacts.delete(file_id)
            raise

    async def _upload(self, model: FactorModel) -> object:
        data = model.to_bytes()
        name = f"model-{model.info.version}-r{model.info.revision}.npz"
        return await self.artifacts.upload_from_stream(
            name, io.BytesIO(data), chunk_size_bytes=CHUNK_BYTES
        )

    async def newest_model(self) -> StoredModel | None:
        """The metadata of the newest version."""
        return _stored_model(await self.models.find_one({}, sort=[("version", DESCENDING)]))

    async def model_document(self, version: int) -> StoredModel | None:
        """One version's metadata."""
        return _stored_model(await self.models.find_one({"_id": version}))

    async def model_documents(self) -> list[StoredModel]:
        """Every stored version's metadata, newest first."""
        docs = await self.models.find({}).sort("version", DESCENDING).to_list(None)
        return [cast(StoredModel, d) for d in docs]

    async def load_model(self, doc: StoredModel) -> FactorModel:
        """The model a metadata document describes."""
        buffer = io.BytesIO()
        await self.artifacts.download_to_stream(doc["file_id"], buffer)
        return FactorModel.from_bytes(info_from_document(doc), buffer.getvalue())

    async def replace_artifact(self, doc: StoredModel, model: FactorModel) -> bool:
        """Store a rewritten model (an erasure) in place of the one ``doc`` describes; ``False``
        when someone rewrote it meanwhile (the caller reads it again)."""
        file_id = await self._upload(model)
        result = await self.models.update_one(
            {"_id": doc["_id"], "revision": doc.get("revision", 0)},
            {"$set": {"file_id": file_id, "revision": model.info.revision}},
        )
        if result.modified_count:
            await self.artifacts.delete(doc["file_id"])
            return True
        await self.artifacts.delete(file_id)
        return False

    async def prune_models(self, keep: int) -> int:
        """Delete all but the ``keep`` newest versions; returns how many went."""
        docs = await self.model_documents()
        for doc in docs[keep:]:
            await self.models.delete_one({"_id": doc["_id"]})
            await self.artifacts.delete(doc["file_id"])
        return max(0, len(docs) - keep)

    # ---- leases -------------------------------------------------------------------------

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Take the lease ``name`` unless another holder's is still running."""
        try:
            await self.leases.update_one(
                {"_id": name, "$or": [{"until": {"$lt": now}}, {"holder": holder}]},
                {"$set": {"holder": holder, "until": now + ttl}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False  # the upsert collided with a live lease held by someone else
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease back (only if still held by ``holder``)."""
        await self.leases.delete_one({"_id": name, "holder": holder})


def _stored_model(doc: Document | None) -> StoredModel | None:
    # The models collection holds only what save_model wrote: info_document's fields.
    return None if doc is None else cast(StoredModel, doc)
