"""Interactions as pure logic: which resolved events say a customer cares about a product, how
much each is worth, and the product properties they carry.

An interaction is stored with its kind and raw value (a rating, or 1) and weighted only when a
model is trained, so changing the weights or the half-life applies to the whole history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

PRODUCT_VIEWED = "Product Viewed"
PRODUCT_ADDED = "Product Added"
ORDER_COMPLETED = "Order Completed"
PRODUCT_RATED = "Product Rated"

VIEWED = "viewed"
ADDED = "added"
ORDERED = "ordered"
RATED = "rated"
KINDS = (VIEWED, ADDED, ORDERED, RATED)
_KIND_OF_EVENT = {
    PRODUCT_VIEWED: VIEWED,
    PRODUCT_ADDED: ADDED,
    ORDER_COMPLETED: ORDERED,
    PRODUCT_RATED: RATED,
}
# The event names that make interactions (every other event is skipped).
INTERACTION_EVENTS = frozenset(_KIND_OF_EVENT)
# Segment's e-commerce spec names the product id product_id; many senders use sku or id.
_ID_KEYS = ("product_id", "sku", "id")
MAX_ITEM_ID = 200


@dataclass(frozen=True)
class InteractionWeights:
    """What one interaction of each kind is worth, and how fast it fades.

    A rating is worth ``rated`` times the rating (``rated`` alone when ``rating_counts`` is
    off: every rating one interaction). With a half-life, an interaction's weight halves every
    ``half_life_days`` of age at training time; 0 turns decay off.
    """

    viewed: float = 1.0
    added: float = 3.0
    ordered: float = 5.0
    rated: float = 1.0
    half_life_days: float = 0.0
    rating_counts: bool = True

    def __post_init__(self) -> None:
        for name in (*KINDS, "half_life_days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"weight {name} must be a finite number >= 0, got {value}")

    def base(self, kind: str, value: float) -> float:
        """The undecayed weight of one interaction of ``kind`` with raw ``value``."""
        if kind not in KINDS:
            raise ValueError(f"unknown interaction kind {kind!r}")
        per_kind: float = getattr(self, kind)
        return per_kind * value if kind == RATED and self.rating_counts else per_kind

    def decay(self, at: datetime, now: datetime) -> float:
        """The factor an interaction at ``at`` keeps at ``now`` (1 without a half-life; events
        from the future count as new)."""
        if self.half_life_days <= 0:
            return 1.0
        age_days = max(0.0, (now - at).total_seconds() / 86_400)
        return float(0.5 ** (age_days / self.half_life_days))

    def weight(self, kind: str, value: float, at: datetime, now: datetime) -> float:
        """The weight an interaction has in a model trained at ``now``."""
        return self.base(kind, value) * self.decay(at, now)

    def as_dict(self) -> dict[str, float]:
        """The weights, for a model's parameters (``rating_counts`` as 1 or 0)."""
        found = {name: float(getattr(self, name)) for name in (*KINDS, "half_life_days")}
        found["rating_counts"] = 1.0 if self.rating_counts else 0.0
        return found


@dataclass(frozen=True)
class Interaction:
    """One customer showing interest in one product. ``order_id`` groups the products of one
    order (for items bought together)."""

    event_id: str
    customer_id: str
    item_id: str
    kind: str
    value: float
    at: datetime
    order_id: str = ""

    @property
    def key(self) -> str:
        """The dedupe key: one interaction per event and product."""
        return f"{self.event_id}:{self.item_id}"


class ItemFields(TypedDict, total=False):
    """An item's known display properties, as events and the catalog store them."""

    name: str
    category: str
    price: float
    image_url: str


@dataclass(frozen=True)
class ItemProperties:
    """What is known about a product to show it: from events or the catalog."""

    item_id: str
    name: str = ""
    category: str = ""
    price: float | None = None
    image_url: str = ""

    def fields(self) -> ItemFields:
        """The known (non-empty) properties, by name."""
        found = ItemFields()
        if self.name:
            found["name"] = self.name
        if self.category:
            found["category"] = self.category
        if self.price is not None:
            found["price"] = self.price
        if self.image_url:
            found["image_url"] = self.image_url
        return found


def product_id(properties: Mapping[str, Any]) -> str | None:
    """The product a set of properties is about, or ``None`` without a usable id."""
    for key in _ID_KEYS:
        value = properties.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            value = str(int(value)) if float(value).is_integer() else str(value)
        if isinstance(value, str) and value.strip() and len(value.strip()) <= MAX_ITEM_ID:
            return value.strip()
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def item_properties(properties: Mapping[str, Any]) -> ItemProperties | None:
    """The product properties of one product object (``None`` without an id)."""
    item_id = product_id(properties)
    if item_id is None:
        return None
    price = _number(properties.get("price"))
    return ItemProperties(
        item_id=item_id,
        name=_text(properties.get("name")),
        category=_text(properties.get("category")),
        price=price if price is not None and price >= 0 else None,
        image_url=_text(properties.get("image_url")),
    )


def products_of(event_name: str, properties: Mapping[str, Any]) -> list[ItemProperties]:
    """The products an event is about: the ``products`` list of an order, else the event's
    own properties."""
    if event_name == ORDER_COMPLETED:
        products = properties.get("products")
        if not isinstance(products, list):
            return []
        found = (item_properties(p) for p in products if isinstance(p, Mapping))
        return list({p.item_id: p for p in found if p is not None}.values())
    single = item_properties(properties)
    return [] if single is None else [single]


def interactions_of(
    event_id: str,
    customer_id: str,
    event_name: str,
    properties: Mapping[str, Any],
    at: datetime,
    *,
    products: Sequence[ItemProperties] | None = None,
) -> list[Interaction]:
    """The interactions one track event makes (none for other events, or a rating that is
    not a positive number); ``products`` saves reading them again when the caller has
    :func:`products_of` the same event."""
    kind = _KIND_OF_EVENT.get(event_name)
    if kind is None or not customer_id:
        return []
    value = 1.0
    if kind == RATED:
        rating = _number(properties.get("rating"))
        if rating is None or rating <= 0:
            return []
        value = rating
    order_id = ""
    if kind == ORDERED:
        order_id = _text(properties.get("order_id")) or event_id
    return [
        Interaction(event_id, customer_id, p.item_id, kind, value, at, order_id)
        for p in (products_of(event_name, properties) if products is None else products)
    ]
