"""Interactions from files: MovieLens-100k as shipped inside the installed ``recbole`` package
(read from disk, never imported), and an analyst's own CSV.

Bad input raises ``ValueError`` naming the line and the column.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from datetime import UTC, datetime
from pathlib import Path

from services.recommendation.interactions import RATED, Interaction, ItemProperties

CSV_COLUMNS = ("user_id", "item_id", "weight", "timestamp")
MOVIELENS_PACKAGE = "recbole"
MOVIELENS_SUBDIR = ("dataset_example", "ml-100k")


def movielens_dir() -> Path:
    """Where the installed ``recbole`` keeps MovieLens-100k (``FileNotFoundError`` if absent)."""
    spec = importlib.util.find_spec(MOVIELENS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location).joinpath(*MOVIELENS_SUBDIR)
        if (folder / "ml-100k.inter").is_file():
            return folder
    raise FileNotFoundError(
        "MovieLens-100k not found: install recbole==1.2.1 with --no-deps "
        "(data-requirements.txt), or pass --interactions FILE.csv"
    )


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]


def movielens_ratings(folder: Path | None = None) -> list[Interaction]:
    """Every MovieLens-100k rating as one positive interaction (value 1) at its time."""
    folder = folder or movielens_dir()
    found = []
    for number, row in enumerate(_rows(folder / "ml-100k.inter"), start=2):
        user, item, _rating, stamp = row[:4]
        at = datetime.fromtimestamp(float(stamp), UTC)
        found.append(Interaction(f"ml-{number}", user, item, RATED, 1.0, at))
    return found


def movielens_catalog(folder: Path | None = None) -> list[ItemProperties]:
    """Every MovieLens-100k movie as a catalog item: title as name, first genre as category."""
    folder = folder or movielens_dir()
    items = []
    for row in _rows(folder / "ml-100k.item"):
        item_id, title = row[0], row[1] if len(row) > 1 else ""
        genres = row[3].split() if len(row) > 3 else []
        items.append(ItemProperties(item_id, title.strip(), genres[0] if genres else ""))
    return items


def _timestamp(value: str) -> datetime:
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    if not math.isfinite(seconds):
        raise ValueError("not a finite number")
    return datetime.fromtimestamp(seconds, UTC)


def read_interactions(path: str | Path) -> list[Interaction]:
    """A CSV with a header naming ``user_id,item_id,weight,timestamp`` (Unix seconds or ISO
    8601); each row is one interaction whose value is its weight."""
    found = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"line 1: missing column(s) {', '.join(missing)}")
        for row in reader:
            line = reader.line_num
            user, item = (row["user_id"] or "").strip(), (row["item_id"] or "").strip()
            if not user or not item:
                raise ValueError(f"line {line}: user_id and item_id must not be empty")
            try:
                weight = float(row["weight"] or "")
            except ValueError:
                raise ValueError(f"line {line}: weight {row['weight']!r} is not a number") from None
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"line {line}: weight must be a positive number")
            try:
                at = _timestamp(row["timestamp"] or "")
            except ValueError:
                raise ValueError(
                    f"line {line}: timestamp {row['timestamp']!r} is neither Unix seconds "
                    "nor ISO 8601"
                ) from None
            found.append(Interaction(f"csv-{line}", user, item, RATED, weight, at))
    if not found:
        raise ValueError("no interactions in the file")
    return found
