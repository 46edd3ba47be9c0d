"""MovieLens-100k as a media store's customers, catalog and events, as pure data.

The files are the ones shipped inside the installed ``recbole`` package (``ml-100k.user``,
``.item``, ``.inter``). Each user becomes a customer (``identify`` with age, gender,
occupation, postal code and a generated ``ml-user-<id>@example.com``), each film a catalog
item, each rating a ``Product Rated`` event and each rating of 4 or 5 also an ``Order
Completed`` of the film at its price, in the ratings' time order.

Times: the gateway refuses events before 2000, and 1997-98 ratings would fall outside every
training window, so every rating moves by one shift that puts the newest at midnight (UTC) of
an anchor day; spacing and order stay the original ones. Message ids derive from the data
and the anchor is fixed per running stack, so loading twice sends the same events twice
(which the platform drops as duplicates).

Price per film (deterministic, by release year): 9.99 from 1995 on, 7.99 for 1980-1994, 4.99
before 1980, 3.99 when the year is unknown.

A bad file raises :class:`DemoSourceError` naming the file, the line and what is wrong.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

USER_FILE = "ml-100k.user"
ITEM_FILE = "ml-100k.item"
RATING_FILE = "ml-100k.inter"
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")
ITEM_COLUMNS = ("item_id", "movie_title", "release_year", "class")
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
CURRENCY = "EUR"
# The demo store's recommendation settings (make run's default; the environment overrides).
# Every order in it mirrors a rating of 4-5, so an order at the default weight of 5 counts that
# rating six times over. Measured through the stack on the full data (tests/perf/bench_demo.py,
# every rating one interaction): nDCG@10 0.4392 with orders at 5, 0.4795 at 1.
DEMO_STORE_SETTINGS = {"LODESTAR_RECOMMENDATION_WEIGHT_ORDERED": "1"}
# Ratings of at least this are purchases too.
ORDERED_FROM = 4
# One in this many users (by id) also starts a checkout three days before the anchor and
# never finishes it: the abandoned-checkout audience.
ABANDONED_EVERY = 100
ABANDONED_REMAINDER = 7
ABANDONED_BEFORE = timedelta(days=3)
RATED_EVENT = "Product Rated"
ORDER_EVENT = "Order Completed"
CHECKOUT_EVENT = "Checkout Started"


class DemoSourceError(ValueError):
    """A MovieLens file is missing or malformed (the message names the file and line)."""


@dataclass(frozen=True)
class User:
    """One MovieLens user."""

    user_id: str
    age: int
    gender: str
    occupation: str
    zip_code: str


@dataclass(frozen=True)
class Film:
    """One MovieLens film."""

    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True)
class Rating:
    """One rating, at its original time."""

    user_id: str
    item_id: str
    rating: int
    at: datetime


@dataclass(frozen=True)
class DemoSource:
    """The users, films and ratings of one load (the first ``N`` users and their ratings
    when sliced), ratings in time order."""

    users: tuple[User, ...]
    films: tuple[Film, ...]
    ratings: tuple[Rating, ...]

    def restricted(self, keep: Iterable[tuple[str, str]]) -> DemoSource:
        """The same users and films with only the ratings whose (user, film) is in ``keep``."""
        wanted = set(keep)
        kept = tuple(r for r in self.ratings if (r.user_id, r.item_id) in wanted)
        return DemoSource(self.users, self.films, kept)


def customer_user_id(user_id: str) -> str:
    """The ``userId`` a MovieLens user is sent with."""
    return f"ml-user-{user_id}"


def customer_email(user_id: str) -> str:
    """The generated e-mail of a MovieLens user (the reserved example domain)."""
    return f"ml-user-{user_id}@example.com"


def film_product_id(item_id: str) -> str:
    """The catalog item id of a MovieLens film."""
    return f"film-{item_id}"


def price_of(film: Film) -> float:
    """The film's price: by release year (see the module docstring)."""
    if film.year is None:
        return 3.99
    if film.year >= 1995:
        return 9.99
    if film.year >= 1980:
        return 7.99
    return 4.99


def category_of(film: Film) -> str:
    """The film's catalog category: its first genre."""
    return film.genres[0] if film.genres else ""


def _table(path: Path, columns: Sequence[str]) -> list[tuple[int, list[str]]]:
    """The rows of a tab-separated file whose header names ``columns`` (``name:type``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DemoSourceError(f"{path.name}: file not found in {path.parent}") from None
    except OSError as error:
        raise DemoSourceError(f"{path.name}: cannot read: {error.strerror or error}") from None
    lines = text.splitlines()
    header = [name.split(":", 1)[0] for name in lines[0].split("\t")] if lines else []
    if header[: len(columns)] != list(columns):
        raise DemoSourceError(
            f"{path.name}: line 1: expected the columns {', '.join(columns)}, got "
            f"{', '.join(h[:40] for h in header[: len(columns) + 1]) or 'nothing'}"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < len(columns):
            raise DemoSourceError(
                f"{path.name}: line {number}: {len(cells)} columns, expected {len(columns)}"
            )
        rows.append((number, [cell.strip() for cell in cells]))
    if not rows:
        raise DemoSourceError(f"{path.name}: no rows")
    return rows


def _integer(value: str, where: str, column: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DemoSourceError(f"{where}: {column} {value[:20]!r} is not a whole number") from None
    if not low <= number <= high:
        raise DemoSourceError(f"{where}: {column} {number} is not between {low} and {high}")
    return number


def _rating(value: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number.is_integer() and 1 <= number <= 5):
        raise DemoSourceError(f"{where}: rating {value[:20]!r} is not a whole number from 1 to 5")
    return int(number)


def read_users(folder: Path) -> list[User]:
    """Every user of ``ml-100k.user``, in file order."""
    users = []
    seen: set[str] = set()
    for number, row in _table(folder / USER_FILE, USER_COLUMNS):
        where = f"{USER_FILE}: line {number}"
        user_id = str(_integer(row[0], where, "user_id", 1, 10**9))
        if user_id in seen:
            raise DemoSourceError(f"{where}: user_id {user_id} appears twice")
        seen.add(user_id)
        age = _integer(row[1], where, "age", 1, 130)
        users.append(User(user_id, age, row[2][:20], row[3][:60], row[4][:20]))
    return users


def read_films(folder: Path) -> list[Film]:
    """Every film of ``ml-100k.item``, in file order."""
    films = []
    seen: set[str] = set()
    for number, row in _table(folder / ITEM_FILE, ITEM_COLUMNS[:2]):
        where = f"{ITEM_FILE}: line {number}"
        item_id = str(_integer(row[0], where, "item_id", 1, 10**9))
        if item_id in seen:
            raise DemoSourceError(f"{where}: item_id {item_id} appears twice")
        seen.add(item_id)
        year_text = row[2] if len(row) > 2 else ""
        year = int(year_text) if year_text.isdigit() and 1800 <= int(year_text) <= 2100 else None
        genres = tuple(row[3].split()) if len(row) > 3 else ()
        films.append(Film(item_id, row[1][:200], year, genres))
    return films


def read_ratings(folder: Path, users: set[str], films: set[str]) -> list[Rating]:
    """Every rating of ``ml-100k.inter`` by a user in ``users``, sorted by time (file order
    among equal times); a film not in ``films`` is an error."""
    ratings = []
    for number, row in _table(folder / RATING_FILE, RATING_COLUMNS):
        where = f"{RATING_FILE}: line {number}"
        user_id, item_id = row[0], row[1]
        if user_id not in users:
            if not user_id.isdigit():
                raise DemoSourceError(f"{where}: user_id {user_id[:20]!r} is not a whole number")
            continue
        if item_id not in films:
            raise DemoSourceError(f"{where}: item_id {item_id[:20]!r} is not in {ITEM_FILE}")
        rating = _rating(row[2], where)
        try:
            seconds = float(row[3])
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and 0 <= seconds < 2**33):
            raise DemoSourceError(f"{where}: timestamp {row[3][:20]!r} is not Unix seconds")
        ratings.append(Rating(user_id, item_id, rating, datetime.fromtimestamp(seconds, UTC)))
    ratings.sort(key=lambda r: r.at)
    return ratings


def read_source(folder: Path, users: int | None = None) -> DemoSource:
    """The users (the first ``users`` of the file when given), every film, and those users'
    ratings in time order."""
    if users is not None and users < 1:
        raise DemoSourceError(f"--users must be at least 1, got {users}")
    everyone = read_users(folder)
    chosen = everyone[:users] if users is not None else everyone
    films = read_films(folder)
    ratings = read_ratings(folder, {u.user_id for u in chosen}, {f.item_id for f in films})
    return DemoSource(tuple(chosen), tuple(films), tuple(ratings))


def anchor_shift(source: DemoSource, anchor: date) -> timedelta:
    """What moves the newest rating to midnight (UTC) of ``anchor``."""
    if not source.ratings:
        return timedelta(0)
    midnight = datetime(anchor.year, anchor.month, anchor.day, tzinfo=UTC)
    return midnight - source.ratings[-1].at


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _product(film: Film) -> dict[str, Any]:
    return {
        "product_id": film_product_id(film.item_id),
        "name": film.title,
        "category": category_of(film),
        "price": price_of(film),
    }


def identify_calls(source: DemoSource, shift: timedelta) -> list[dict[str, Any]]:
    """One ``identify`` per user, stamped at their first rating (or the anchor)."""
    first: dict[str, datetime] = {}
    for rating in source.ratings:
        first.setdefault(rating.user_id, rating.at + shift)
    newest = source.ratings[-1].at + shift if source.ratings else datetime(2000, 1, 1, tzinfo=UTC)
    return [
        {
            "type": "identify",
            "messageId": f"ml-identify-{user.user_id}",
            "userId": customer_user_id(user.user_id),
            "timestamp": _stamp(first.get(user.user_id, newest) - timedelta(seconds=1)),
            "traits": {
                "email": customer_email(user.user_id),
                "age": user.age,
                "gender": user.gender,
                "occupation": user.occupation,
                "postalCode": user.zip_code,
            },
        }
        for user in source.users
    ]


def abandoned_checkout_users(source: DemoSource, shift: timedelta) -> list[str]:
    """The users who start a checkout they never finish (one in 100 by id, among those whose
    last rating is older than the checkout)."""
    last: dict[str, datetime] = {}
    for rating in source.ratings:
        last[rating.user_id] = rating.at + shift
    if not source.ratings:
        return []
    checkout_at = source.ratings[-1].at + shift - ABANDONED_BEFORE
    return [
        u.user_id
        for u in source.users
        if int(u.user_id) % ABANDONED_EVERY == ABANDONED_REMAINDER
        and u.user_id in last
        and last[u.user_id] < checkout_at
    ]


def event_calls(source: DemoSource, shift: timedelta) -> list[dict[str, Any]]:
    """Every rating as ``Product Rated`` (and ``Order Completed`` when 4-5), then the
    abandoned checkouts, in time order."""
    films = {f.item_id: f for f in source.films}
    calls: list[dict[str, Any]] = []
    for rating in source.ratings:
        film = films[rating.item_id]
        user = customer_user_id(rating.user_id)
        stamp = _stamp(rating.at + shift)
        product = _product(film)
        calls.append(
            {
                "type": "track",
                "messageId": f"ml-rated-{rating.user_id}-{rating.item_id}",
                "userId": user,
                "event": RATED_EVENT,
                "timestamp": stamp,
                "properties": {**product, "genres": list(film.genres), "rating": rating.rating},
            }
        )
        if rating.rating >= ORDERED_FROM:
            calls.append(
                {
                    "type": "track",
                    "messageId": f"ml-order-{rating.user_id}-{rating.item_id}",
                    "userId": user,
                    "event": ORDER_EVENT,
                    "timestamp": stamp,
                    "properties": {
                        "order_id": f"ml-order-{rating.user_id}-{rating.item_id}",
                        "revenue": product["price"],
                        "currency": CURRENCY,
                        "products": [product],
                    },
                }
            )
    if source.ratings:
        checkout_at = source.ratings[-1].at + shift - ABANDONED_BEFORE
        popular = Counter(r.item_id for r in source.ratings).most_common(1)[0][0]
        product = _product(films[popular])
        for user_id in abandoned_checkout_users(source, shift):
            calls.append(
                {
                    "type": "track",
                    "messageId": f"ml-checkout-{user_id}",
                    "userId": customer_user_id(user_id),
                    "event": CHECKOUT_EVENT,
                    "timestamp": _stamp(checkout_at),
                    "properties": {
                        "order_id": f"ml-checkout-{user_id}",
                        "value": product["price"],
                        "currency": CURRENCY,
                        "products": [product],
                    },
                }
            )
    return calls


def catalog_items(source: DemoSource) -> list[dict[str, Any]]:
    """Every film as a catalog item (item_id, name, category, price)."""
    return [
        {
            "item_id": film_product_id(f.item_id),
            "name": f.title,
            "category": category_of(f),
            "price": price_of(f),
        }
        for f in source.films
    ]


@dataclass(frozen=True)
class Expected:
    """What one customer's profile holds once every event of the load is folded."""

    rated: int
    ordered: int


def expected_counts(source: DemoSource) -> dict[str, Expected]:
    """Per ``userId``: the ``Product Rated`` and ``Order Completed`` events the load sends."""
    rated: Counter[str] = Counter()
    ordered: Counter[str] = Counter()
    for rating in source.ratings:
        rated[rating.user_id] += 1
        if rating.rating >= ORDERED_FROM:
            ordered[rating.user_id] += 1
    return {
        customer_user_id(u.user_id): Expected(rated[u.user_id], ordered[u.user_id])
        for u in source.users
    }
