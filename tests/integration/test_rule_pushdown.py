"""Property: a segment rule pushed down to the MongoDB-wire server finds exactly the customers
the in-process evaluation selects (backfill and real time agree), and with event conditions
its prefilter keeps every member.

Each example draws a small palette of texts, numbers and times that its profiles and its
rules share, so values meet where the semantics are delicate: equal values, substrings,
lists holding the value, and times a fraction of a millisecond apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection

from services.platform.fieldnames import field_key
from services.platform.mongo import Document, database
from services.segmentation.rules import EventRecord, Rule, parse
from services.segmentation.store.rule_query import prefilter, to_query
from tests.support.kafka import unique

# Microseconds on ``now`` exercise the rounding of time bounds to BSON's milliseconds.
NOW = datetime(2026, 3, 10, 12, 0, 0, 123_456, tzinfo=UTC)
NOW_MS = NOW.replace(microsecond=123_000)
DAY_MS = 86_400_000
WINDOWS = (0.5, 1, 7, 30)
TRAITS = ("tags", "odd.key", "$dollar", "with space")
EVENTS = ("Viewed", "Order Completed", "a.b", "$set")
PII = ("email", "phone")
TEXTS = ("a", "b", "ab", "ba", "a.b", "$*", "(é)", "gold")
NUMBERS = st.one_of(st.integers(-1, 4), st.sampled_from([0.5, 1.0, 2.5]))
# The edges of the windows rules use, one millisecond either side, and anywhere in 40 days.
EDGES = sorted({int(d * DAY_MS) + e for d in (0, *WINDOWS) for e in (-1, 0, 1)} - {-1})
MOMENTS = st.one_of(st.sampled_from(EDGES), st.integers(0, 40 * DAY_MS)).map(
    lambda ms: NOW_MS - timedelta(milliseconds=ms)
)
LENIENT = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Palette:
    """The values one example's profiles and rules share."""

    texts: tuple[str, ...]
    numbers: tuple[float, ...]
    times: tuple[datetime, ...]

    def scalars(self) -> st.SearchStrategy[Any]:
        return st.one_of(st.sampled_from(self.texts), self.number(), st.booleans())

    def number(self) -> st.SearchStrategy[float]:
        return st.one_of(st.sampled_from(self.numbers), NUMBERS)

    def moment(self) -> st.SearchStrategy[datetime]:
        return st.one_of(st.sampled_from(self.times), MOMENTS)

    def substring(self) -> st.SearchStrategy[str]:
        """A non-empty part of one of the texts."""
        return st.sampled_from(self.texts).flatmap(
            lambda text: st.integers(0, len(text) - 1).flatmap(
                lambda start: st.integers(start + 1, len(text)).map(lambda end: text[start:end])
            )
        )


PALETTES = st.builds(
    Palette,
    texts=st.lists(st.sampled_from(TEXTS), min_size=1, max_size=3, unique=True).map(tuple),
    numbers=st.lists(NUMBERS, min_size=1, max_size=3).map(tuple),
    times=st.lists(MOMENTS, min_size=1, max_size=3).map(tuple),
)


def weighted(*choices: tuple[st.SearchStrategy[Any], int]) -> st.SearchStrategy[Any]:
    """One of the strategies, drawn in proportion to its weight."""
    pool = [strategy for strategy, weight in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, now and then null."""
    return st.integers(0, 4).flatmap(lambda n: values if n else st.none())


def subdoc(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the fields, each value now and then null."""
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})


def profiles(p: Palette) -> st.SearchStrategy[dict[str, Any]]:
    """Segmentation profile documents as stored: names escaped, any field missing."""
    trait_values = weighted(
        (p.scalars(), 3),
        (st.lists(st.one_of(p.scalars(), st.none()), max_size=3), 3),
        (st.fixed_dictionaries({"a": p.number()}), 1),
    )
    counts = st.integers(0, 4)
    return st.fixed_dictionaries(
        {"traits": st.dictionaries(st.sampled_from(TRAITS).map(field_key), maybe(trait_values))},
        optional={
            "traits_present": st.lists(st.sampled_from((*PII, "plan")), unique=True),
            "event_counts": st.dictionaries(st.sampled_from(EVENTS).map(field_key), counts),
            "first_seen": p.moment(),
            "last_seen": p.moment(),
            "orders": subdoc({"count": counts, "revenue": p.number(), "last_order_at": p.moment()}),
            "loyalty": subdoc(
                {
                    "tier": st.sampled_from(["bronze", "silver", "gold"]),
                    "points": p.number(),
                    "tier_since": p.moment(),
                }
            ),
            "consent": subdoc(
                {
                    k: st.sampled_from(["granted", "denied"])
                    for k in ("email_marketing", "analytics")
                }
            ),
            "behaviour": subdoc(
                {
                    "session_count": counts,
                    "cart_open": st.booleans(),
                    "channels": st.lists(st.sampled_from(["web", "ios", "email"]), unique=True),
                    "last_page": st.sampled_from(["/a.b", "/shoes?x=1", "/", "gold"]),
                }
            ),
            "engagement": st.fixed_dictionaries(
                {}, optional={"email_opened": subdoc({"count": counts, "last_at": p.moment()})}
            ),
            "scores": subdoc(
                {
                    "p_alive": p.number(),
                    "rfm_cell": st.sampled_from(["Champions", "At risk", "Lost"]),
                }
            ),
        },
    )


def op_value(ops: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.tuples(st.sampled_from(ops), values)


def pair(values: st.SearchStrategy[Any], key: Any = None) -> st.SearchStrategy[Any]:
    """``between`` bounds, low first."""
    return st.lists(values, min_size=2, max_size=2).map(lambda two: sorted(two, key=key))


ORDERING = ["gt", "gte", "lt", "lte"]
EXISTS = (op_value(["exists"], st.booleans()), 1)


def some(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """The list an ``in`` takes."""
    return st.lists(values, min_size=1, max_size=3)


NUMBER_FIELDS = (
    "orders.count",
    "orders.revenue",
    "loyalty.points",
    "behaviour.session_count",
    "scores.p_alive",
    "engagement.email_opened.count",
    *(f"event_counts.{e}" for e in EVENTS),
)
TEXT_FIELDS = ("loyalty.tier", "behaviour.last_page", "scores.rfm_cell")
TIME_FIELDS = (
    "first_seen",
    "last_seen",
    "orders.last_order_at",
    "loyalty.tier_since",
    "engagement.email_opened.last_at",
)


def condition_families(p: Palette) -> list[st.SearchStrategy[dict[str, Any]]]:
    """Field conditions, one strategy per kind of field."""
    texts = st.sampled_from(p.texts)
    # ISO texts on, or a fraction of a millisecond beside, the palette's times.
    times = st.tuples(p.moment(), st.sampled_from([0, 0, 1, 500, 999, -1, -500])).map(
        lambda t: (t[0] + timedelta(microseconds=t[1])).isoformat()
    )
    trait = weighted(
        (op_value(["eq", "ne"], p.scalars()), 2),
        (op_value(ORDERING, st.one_of(texts, p.number())), 3),
        (op_value(["in"], some(p.scalars())), 1),
        (op_value(["contains"], st.one_of(p.substring(), p.number(), st.booleans())), 3),
        (op_value(["between"], st.one_of(pair(texts), pair(p.number()))), 2),
        EXISTS,
    )
    families: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
        (
            NUMBER_FIELDS,
            weighted(
                (op_value(["eq", "ne", *ORDERING], p.number()), 4),
                (op_value(["in"], some(p.number())), 1),
                (op_value(["between"], pair(p.number())), 1),
                EXISTS,
            ),
        ),
        (
            TEXT_FIELDS,
            weighted(
                (op_value(["eq", "ne"], st.sampled_from(["gold", "Lost", "/"])), 2),
                (op_value(["in"], some(st.sampled_from(["gold", "/a.b"]))), 1),
                (op_value(["contains"], st.sampled_from([".", "?", "a", "ol", "/"])), 2),
                EXISTS,
            ),
        ),
        (
            TIME_FIELDS,
            weighted(
                (op_value(ORDERING, times), 3),
                (op_value(["between"], pair(times, key=datetime.fromisoformat)), 1),
                (op_value(["within_last_days"], st.sampled_from(WINDOWS)), 2),
                EXISTS,
            ),
        ),
        (("behaviour.cart_open",), weighted((op_value(["eq", "ne"], st.booleans()), 2), EXISTS)),
        (
            ("behaviour.channels",),
            weighted((op_value(["contains"], st.sampled_from(["web", "ios", "fax"])), 2), EXISTS),
        ),
        (
            ("consent.email_marketing", "consent.analytics"),
            weighted(
                (op_value(["eq", "ne"], st.sampled_from(["granted", "denied"])), 2),
                (op_value(["in"], some(st.sampled_from(["granted", "denied"]))), 1),
                EXISTS,
            ),
        ),
        (tuple(f"traits.{t}" for t in TRAITS), trait),
        (tuple(f"traits.{p}" for p in PII), op_value(["exists"], st.booleans())),
    ]
    return [
        st.tuples(st.sampled_from(fields), operands).map(
            lambda c: {"field": c[0], "op": c[1][0], "value": c[1][1]}
        )
        for fields, operands in families
    ]


def battery(p: Palette) -> st.SearchStrategy[list[Rule]]:
    """Conditions of every kind on their own (inside a rule one can hide another's
    mistake); traits, which may hold anything, most."""
    families = condition_families(p)
    counts = [2] * (len(families) - 2) + [8, 2]  # the trait family is next to last
    drawn = [st.lists(f, min_size=n, max_size=n) for f, n in zip(families, counts, strict=True)]
    return st.tuples(*drawn).map(lambda lists: [parse(c) for conds in lists for c in conds])


def combined(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda rules: {"all": rules}),
        st.lists(children, min_size=1, max_size=3).map(lambda rules: {"any": rules}),
        children.map(lambda rule: {"not": rule}),
    )


def field_rules(p: Palette) -> st.SearchStrategy[Rule]:
    return st.recursive(st.one_of(condition_families(p)), combined, max_leaves=6).map(parse)


async def stored(client: AsyncIOMotorClient[Document]) -> AsyncIOMotorCollection[Document]:
    return database(client, unique("rules").replace("-", "_"), "segmentation")["profiles"]


async def found(collection: AsyncIOMotorCollection[Document], query: Document) -> set[str]:
    return {doc["_id"] async for doc in collection.find(query, {"_id": 1})}


@settings(LENIENT, max_examples=60)
@given(
    example=PALETTES.flatmap(
        lambda p: st.tuples(
            st.lists(profiles(p), min_size=5, max_size=30),
            battery(p),
            st.lists(field_rules(p), min_size=1, max_size=6),
        )
    )
)
async def test_pushdown_finds_exactly_the_matching_profiles(
    client: AsyncIOMotorClient[Document],
    example: tuple[list[dict[str, Any]], list[Rule], list[Rule]],
) -> None:
    profiles, conditions, rules = example
    docs = [{"_id": f"c{n}", **profile} for n, profile in enumerate(profiles)]
    collection = await stored(client)
    await collection.insert_many(docs)
    read_back = [doc async for doc in collection.find({})]
    for rule in [*conditions, *rules]:
        query = to_query(rule, NOW)
        assert query is not None
        expected = {doc["_id"] for doc in docs if rule.matches(doc, [], NOW)}
        assert await found(collection, query) == expected, (rule.to_json(), query)
        assert {doc["_id"] for doc in read_back if rule.matches(doc, [], NOW)} == expected
    await collection.drop()


def mixed_rules(p: Palette) -> st.SearchStrategy[Rule]:
    events = st.one_of(
        st.builds(
            lambda event, count, days: {"event": event, "count": count, "within_last_days": days},
            st.sampled_from(EVENTS),
            st.sampled_from([{"gte": 1}, {"lte": 1}, {"eq": 0}, {"gt": 1}]),
            st.sampled_from(WINDOWS),
        ),
        st.just(
            {"event": "Viewed", "not_followed_by": {"event": "Order Completed", "within_hours": 48}}
        ),
    )
    leaves = st.one_of(*condition_families(p), events)
    return st.recursive(leaves, combined, max_leaves=5).map(parse)


def recent_events(p: Palette) -> st.SearchStrategy[list[EventRecord]]:
    return st.lists(st.builds(EventRecord, st.sampled_from(EVENTS), p.moment()), max_size=4)


@settings(LENIENT, max_examples=25)
@given(
    example=PALETTES.flatmap(
        lambda p: st.tuples(
            st.lists(st.tuples(profiles(p), recent_events(p)), min_size=1, max_size=20),
            st.lists(mixed_rules(p), min_size=1, max_size=4),
        )
    )
)
async def test_prefilter_keeps_every_member(
    client: AsyncIOMotorClient[Document],
    example: tuple[list[tuple[dict[str, Any], list[EventRecord]]], list[Rule]],
) -> None:
    customers, rules = example
    docs = [({"_id": f"c{n}", **doc}, events) for n, (doc, events) in enumerate(customers)]
    collection = await stored(client)
    await collection.insert_many([doc for doc, _ in docs])
    for rule in rules:
        members = {doc["_id"] for doc, events in docs if rule.matches(doc, events, NOW)}
        assert members <= await found(collection, prefilter(rule, NOW)), rule.to_json()
        if not rule.uses_events:
            assert to_query(rule, NOW) == prefilter(rule, NOW)
    await collection.drop()
