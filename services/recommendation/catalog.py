"""The product catalog as pure logic: validating items (from the ``ImportCatalog`` RPC or a
CSV file) and merging catalog properties over those seen in events.

Bad input raises :class:`InvalidArgument` naming the item (or line) and the field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.platform.errors import InvalidArgument
from services.recommendation.interactions import MAX_ITEM_ID, ItemProperties

CSV_COLUMNS = ("item_id", "name", "category", "price", "image_url")
MAX_TEXT = 1_000


def checked_item(item: ItemProperties, where: str) -> ItemProperties:
    """``item`` with its text trimmed; :class:`InvalidArgument` naming ``where`` and the field
    when something is wrong."""
    item_id = item.item_id.strip()
    if not item_id:
        raise InvalidArgument(f"{where}.item_id is required")
    if len(item_id) > MAX_ITEM_ID:
        raise InvalidArgument(f"{where}.item_id is longer than {MAX_ITEM_ID} characters")
    for name in ("name", "category", "image_url"):
        if len(getattr(item, name)) > MAX_TEXT:
            raise InvalidArgument(f"{where}.{name} is longer than {MAX_TEXT} characters")
    if item.price is not None and not (math.isfinite(item.price) and item.price >= 0):
        raise InvalidArgument(f"{where}.price must be a number >= 0")
    if item.image_url and not item.image_url.startswith(("https://", "http://")):
        raise InvalidArgument(f"{where}.image_url must be an http(s) URL")
    return ItemProperties(
        item_id, item.name.strip(), item.category.strip(), item.price, item.image_url.strip()
    )


def read_catalog(path: str | Path) -> list[ItemProperties]:
    """A CSV with a header naming ``item_id`` and any of ``name,category,price,image_url``."""
    items = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "item_id" not in (reader.fieldnames or []):
            raise InvalidArgument("line 1: missing column item_id")
        for row in reader:
            where = f"line {reader.line_num}"
            raw_price = (row.get("price") or "").strip()
            try:
                price = float(raw_price) if raw_price else None
            except ValueError:
                raise InvalidArgument(f"{where}.price {raw_price!r} is not a number") from None
            item = ItemProperties(
                item_id=row.get("item_id") or "",
                name=row.get("name") or "",
                category=row.get("category") or "",
                price=price,
                image_url=row.get("image_url") or "",
            )
            items.append(checked_item(item, where))
    if not items:
        raise InvalidArgument("the catalog file has no items")
    return items


def merged(item_id: str, seen: Mapping[str, Any], imported: Mapping[str, Any]) -> ItemProperties:
    """An item's properties: the catalog's where it has them, else the latest seen in events."""
    values = {**dict(seen), **{k: v for k, v in imported.items() if v not in ("", None)}}
    price = values.get("price")
    return ItemProperties(
        item_id=item_id,
        name=str(values.get("name") or ""),
        category=str(values.get("category") or ""),
        price=float(price) if isinstance(price, int | float) else None,
        image_url=str(values.get("image_url") or ""),
    )
