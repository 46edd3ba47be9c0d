"""The model a replica serves, kept current from the store.

Every replica polls for the newest model version (and for catalog changes), builds the new
:class:`Recommender` off the event loop, then swaps one reference: a request in flight keeps
the snapshot it started with, the next one sees the new model, none fails.

Erasure takes a customer out of the served model at once and out of every stored artifact
(bumping its revision, which the other replicas' polls pick up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from services.recommendation.interactions import Interaction, ItemProperties
from services.recommendation.model import FactorModel, StoredModel, info_from_document
from services.recommendation.recommender import Recommender

log = logging.getLogger(__name__)
# An artifact rewritten concurrently by another replica is read again this often.
REWRITE_ATTEMPTS = 5


class ServingStore(Protocol):
    """What serving reads and rewrites in the store."""

    async def newest_model(self) -> StoredModel | None:
        """The metadata of the newest version."""

    async def model_document(self, version: int) -> StoredModel | None:
        """One version's metadata."""

    async def model_documents(self) -> list[StoredModel]:
        """Every stored version's metadata, newest first."""

    async def load_model(self, doc: StoredModel) -> FactorModel:
        """The model a metadata record describes."""

    async def replace_artifact(self, doc: StoredModel, model: FactorModel) -> bool:
        """Store a rewritten model in place of ``doc``'s; ``False`` when rewritten meanwhile."""

    async def items_changed_since(
        self, since: datetime | None
    ) -> tuple[dict[str, ItemProperties], datetime | None]:
        """The item properties changed after ``since`` (all when ``None``), and the newest
        change."""

    async def erase(self, customer_id: str) -> int:
        """Delete the customer's interactions."""

    async def interactions_of(self, customer_id: str) -> list[Interaction]:
        """The customer's interactions."""


def export_of(interactions: Sequence[Interaction]) -> dict[str, Any]:
    """What the service holds about a customer, as JSON values."""
    return {
        "interactions": [
            {
                "event_id": i.event_id,
                "item_id": i.item_id,
                "kind": i.kind,
                "value": i.value,
                "at": i.at.isoformat(),
            }
            for i in interactions
        ]
    }


class Recommendations:
    """The served snapshot and how it follows the store."""

    def __init__(self, store: ServingStore) -> None:
        self.store = store
        self.recommender = Recommender(None, {})
        self._catalog: dict[str, ItemProperties] = {}
        self._catalog_mark: datetime | None = None
        self._lock = asyncio.Lock()

    @property
    def model(self) -> FactorModel | None:
        """The model being served (``None`` before the first one)."""
        return self.recommender.model

    @property
    def catalog(self) -> Mapping[str, ItemProperties]:
        """The item properties of the served snapshot, by item id."""
        return self.recommender.catalog

    def _served_key(self) -> tuple[int, int] | None:
        model = self.model
        return None if model is None else (model.info.version, model.info.revision)

    async def _swap(self, model: FactorModel | None) -> None:
        built = await asyncio.to_thread(Recommender, model, self._catalog)
        self.recommender = built  # one reference: requests see the old or the new snapshot

    async def refresh(self) -> bool:
        """Load a newer model (or a rewritten artifact) and catalog changes; ``True`` when the
        served snapshot changed."""
        async with self._lock:
            changed = await self._pull_catalog()
            model = self.model
            doc = await self.store.newest_model()
            if doc is not None:
                info = info_from_document(doc)
                served = self._served_key()
                if served is None or (info.version, info.revision) > served:
                    model = await self.store.load_model(doc)
            if model is self.model and not changed:
                return False
            await self._swap(model)
            if model is not None:
                log.info(
                    "serving model",
                    extra={
                        "fields": {"version": model.info.version, "revision": model.info.revision}
                    },
                )
            return True

    async def _pull_catalog(self) -> bool:
        """Take in the item properties that changed; ``True`` if any did."""
        found, mark = await self.store.items_changed_since(self._catalog_mark)
        changed = {k: v for k, v in found.items() if self._catalog.get(k) != v}
        self._catalog.update(changed)
        self._catalog_mark = mark
        return bool(changed)

    async def serve(self, model: FactorModel) -> None:
        """Serve a model just trained here (unless a newer one is served already), with the
        item properties seen since the last poll."""
        async with self._lock:
            await self._pull_catalog()
            served = self._served_key()
            if served is None or (model.info.version, model.info.revision) > served:
                await self._swap(model)

    async def erase(self, customer_id: str) -> None:
        """Delete the customer's interactions, take them out of the served model and out of
        every stored model version."""
        await self.store.erase(customer_id)
        async with self._lock:
            model = self.model
            if model is not None and customer_id in self.recommender.user_index:
                await self._swap(model.without_customers([customer_id]))
        await self.erase_from_artifacts({customer_id})

    async def erase_from_artifacts(self, customer_ids: set[str]) -> int:
        """Rewrite every stored model that still holds one of ``customer_ids``; returns how
        many artifacts were rewritten."""
        rewritten = 0
        for listed in await self.store.model_documents():
            doc = listed
            for _ in range(REWRITE_ATTEMPTS):
                stored = await self.store.load_model(doc)
                if not customer_ids.intersection(stored.customer_ids):
                    break
                if await self.store.replace_artifact(doc, stored.without_customers(customer_ids)):
                    rewritten += 1
                    break
                fresh = await self.store.model_document(doc["_id"])
                if fresh is None:
                    break
                doc = fresh
        return rewritten

    async def export(self, customer_id: str) -> dict[str, Any]:
        """What is held about the customer: interactions, and whether the served model has
        factors for them."""
        held = export_of(await self.store.interactions_of(customer_id))
        held["in_served_model"] = customer_id in self.recommender.user_index
        return held
