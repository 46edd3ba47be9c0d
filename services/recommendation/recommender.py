"""Answering requests from one model and the catalog, as pure logic.

A :class:`Recommender` is an immutable snapshot built off the request path (indexes, unit-length
item factors, popularity per category), so a request is a matrix-vector product, a few masks
and an ``argpartition``: no I/O. Customers or items the model has not seen get popularity, in
their category when one is known, and every answer says which strategy produced it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.recommendation.interactions import ItemProperties
from services.recommendation.model import FactorModel

PERSONALIZED = "personalized"
POPULAR = "popular"
POPULAR_IN_CATEGORY = "popular_in_category"
SIMILAR_ITEMS = "similar_items"
BOUGHT_TOGETHER = "bought_together"
NO_CATEGORY = -1
UNKNOWN_CATEGORY = -2


@dataclass(frozen=True)
class Answer:
    """Items (id, score) best first, and the strategy that chose them."""

    items: list[tuple[str, float]]
    strategy: str
    model_version: int


def category_key(category: str) -> str:
    """Categories match without regard to case or surrounding spaces."""
    return category.strip().casefold()


def _top(scores: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.intp]:
    """Indexes of the ``n`` highest finite scores, best first."""
    finite = np.isfinite(scores)
    count = int(finite.sum())
    if count == 0 or n <= 0:
        return np.empty(0, dtype=np.intp)
    n = min(n, count)
    everything = n >= len(scores)
    candidates = np.arange(len(scores)) if everything else np.argpartition(-scores, n - 1)[:n]
    ordered = candidates[np.argsort(-scores[candidates], kind="stable")]
    return ordered[np.isfinite(scores[ordered])][:n]


class Recommender:
    """One model (or none yet) and the item properties known when it was built."""

    def __init__(self, model: FactorModel | None, catalog: Mapping[str, ItemProperties]) -> None:
        self.model = model
        self.catalog = dict(catalog)
        self.version = model.info.version if model is not None else 0
        ids = model.item_ids if model is not None else []
        self.item_ids = np.array(ids, dtype=object)
        self.item_index = {item: i for i, item in enumerate(ids)}
        self.user_index = (
            {c: i for i, c in enumerate(model.customer_ids)} if model is not None else {}
        )
        self.category_codes: dict[str, int] = {}
        codes = np.full(len(ids), NO_CATEGORY, dtype=np.int32)
        for i, item in enumerate(ids):
            properties = self.catalog.get(item)
            if properties is not None and properties.category:
                key = category_key(properties.category)
                codes[i] = self.category_codes.setdefault(key, len(self.category_codes))
        self.item_category = codes
        self.user_factors: npt.NDArray[np.float64]
        self.item_factors: npt.NDArray[np.float64]
        if model is None:
            self.user_factors = np.zeros((0, 0))
            self.item_factors = np.zeros((0, 0))
            self.unit_item_factors = self.item_factors
            self.popular_order = np.empty(0, dtype=np.intp)
        else:
            self.user_factors = model.user_factors.astype(np.float64)
            self.item_factors = model.item_factors.astype(np.float64)
            norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
            self.unit_item_factors = self.item_factors / np.where(norms > 0, norms, 1.0)
            order = np.argsort(-model.popularity, kind="stable")
            self.popular_order = order[model.popularity[order] > 0]
        self.popular_by_category = {
            code: self.popular_order[self.item_category[self.popular_order] == code]
            for code in self.category_codes.values()
        }

    # ---- helpers ------------------------------------------------------------------------

    def _code(self, category: str) -> int:
        if not category.strip():
            return NO_CATEGORY
        return self.category_codes.get(category_key(category), UNKNOWN_CATEGORY)

    def _indexes(self, item_ids: Collection[str]) -> list[int]:
        return [self.item_index[i] for i in item_ids if i in self.item_index]

    def _answer(
        self, picked: npt.NDArray[np.intp], scores: Sequence[float], strategy: str
    ) -> Answer:
        items = [(str(self.item_ids[i]), float(s)) for i, s in zip(picked, scores, strict=True)]
        return Answer(items, strategy, self.version)

    def item(self, item_id: str) -> ItemProperties:
        """What is known about an item to show it (its id at least)."""
        return self.catalog.get(item_id) or ItemProperties(item_id)

    def category_of(self, item_id: str) -> str:
        """The item's category, or ``""`` when unknown."""
        properties = self.catalog.get(item_id)
        return properties.category if properties is not None else ""

    # ---- strategies ---------------------------------------------------------------------

    def popular(self, n: int, category: str = "", exclude: Collection[int] = ()) -> Answer:
        """The ``n`` items with most distinct customers, in ``category`` when given."""
        code = self._code(category)
        if code == NO_CATEGORY:
            order, strategy = self.popular_order, POPULAR
        else:
            order = self.popular_by_category.get(code, np.empty(0, dtype=np.intp))
            strategy = POPULAR_IN_CATEGORY
        if exclude:
            skip = set(exclude)
            picked = np.array([i for i in order[: n + len(skip)] if i not in skip][:n], np.intp)
        else:
            picked = order[:n]
        model = self.model
        scores = [] if model is None else model.popularity[picked].tolist()
        return self._answer(picked, scores, strategy)

    def recommend(
        self,
        customer_id: str,
        n: int,
        exclude_purchased: bool = False,
        exclude_items: Collection[str] = (),
        category: str = "",
    ) -> Answer:
        """The customer's top ``n`` by model score; popularity for an unknown customer."""
        excluded = self._indexes(exclude_items)
        user = self.user_index.get(customer_id)
        model = self.model
        if exclude_purchased and model is not None and user is not None:
            bought = model.purchased.indices[
                model.purchased.indptr[user] : model.purchased.indptr[user + 1]
            ]
            excluded.extend(bought.tolist())
        if user is None:
            return self.popular(n, category, excluded)
        scores = self.item_factors @ self.user_factors[user]
        if excluded:
            scores[excluded] = -np.inf
        code = self._code(category)
        if code != NO_CATEGORY:
            scores[self.item_category != code] = -np.inf
        picked = _top(scores, n)
        return self._answer(picked, scores[picked].tolist(), PERSONALIZED)

    def similar_items(self, item_id: str, n: int) -> Answer:
        """Items closest to ``item_id`` by cosine of their factors; for an item the model has
        not seen, popularity in its catalog category."""
        index = self.item_index.get(item_id)
        if index is None:
            return self.popular(n, self.category_of(item_id))
        scores = self.unit_item_factors @ self.unit_item_factors[index]
        scores[index] = -np.inf
        picked = _top(scores, n)
        return self._answer(picked, scores[picked].tolist(), SIMILAR_ITEMS)

    def bought_together(self, item_id: str, n: int) -> Answer:
        """Items most often ordered with ``item_id`` (count of shared orders); popularity in
        its category when it was never ordered with anything."""
        index = self.item_index.get(item_id)
        model = self.model
        if index is None or model is None:
            return self.popular(n, self.category_of(item_id))
        start, end = model.together.indptr[index], model.together.indptr[index + 1]
        if start == end:
            return self.popular(n, self.category_of(item_id), [index])
        counts = np.full(len(self.item_ids), -np.inf)
        counts[model.together.indices[start:end]] = model.together.data[start:end]
        counts[index] = -np.inf
        picked = _top(counts, n)
        return self._answer(picked, counts[picked].tolist(), BOUGHT_TOGETHER)
