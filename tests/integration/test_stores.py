"""The identity and profile stores against a real MongoDB-wire server (SecantusDB)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import get_type_hints

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from services.platform.mongo import Document, database
from services.profile import sessions
from services.profile.fold import ProfileDelta
from services.profile.store import ProfileStore
from tests.support.kafka import unique

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(client: AsyncIOMotorClient[Document]) -> AsyncIOMotorDatabase[Document]:
    return database(client, unique("t").replace("-", "_"), "store")


def delta(event_id: str, customer: str = "c1", name: str = "Viewed", at: int = 0) -> ProfileDelta:
    return ProfileDelta(
        event_id=event_id,
        customer_id=customer,
        set_traits={"plan": f"p{at}"},
        count_increments={name: 1},
        seen_at=T0 + timedelta(minutes=at),
    )


async def test_profile_apply_is_idempotent_per_event(db: AsyncIOMotorDatabase[Document]) -> None:
    store = ProfileStore(db, dedupe_window=100)
    assert await store.apply([delta("e1"), delta("e2", at=5)]) == 2
    # Redelivery of a batch that overlaps what was stored: e2 again, e3 new.
    assert await store.apply([delta("e2", at=5), delta("e3", at=9), delta("e1")]) == 1
    profile = await store.get("c1")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 3}
    assert profile.first_seen == T0
    assert profile.last_seen == T0 + timedelta(minutes=9)
    assert profile.traits == {"plan": "p9"}  # e3 was the last new event; e1 again is a no-op


async def test_profile_same_event_twice_in_one_batch_counts_once(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=100)
    assert await store.apply([delta("dup"), delta("other", "c2"), delta("dup"), delta("dup")]) == 2
    profile = await store.get("c1")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 1}


async def test_profile_dedupe_window_is_bounded(db: AsyncIOMotorDatabase[Document]) -> None:
    store = ProfileStore(db, dedupe_window=3)
    await store.apply([delta(f"e{i}") for i in range(5)])
    raw = await db["profiles"].find_one({"_id": "c1"})
    assert raw is not None
    assert raw["recent_event_ids"] == ["e2", "e3", "e4"]


async def test_profile_names_with_dots_and_dollars_survive(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=10)
    from services.platform.fieldnames import field_key

    odd = "$weird.event name"
    await store.apply(
        [
            ProfileDelta("x1", "c9", {field_key("a.b"): 1}, {field_key(odd): 1}, T0),
        ]
    )
    profile = await store.get("c9")
    assert profile is not None
    assert profile.event_counts == {odd: 1}
    assert profile.traits == {"a.b": 1}


async def test_profile_concurrent_redelivery_counts_once(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=100)
    await asyncio.gather(*(store.apply([delta("same")]) for _ in range(10)))
    profile = await store.get("c1")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 1}


async def test_merge_folds_profiles_into_the_survivor_once(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=100)
    later = T0 + timedelta(days=1)
    await store.apply(
        [
            ProfileDelta("s1", "survivor", {"plan": "free", "city": "Oslo"}, {"Viewed": 2}, T0),
            ProfileDelta("m1", "merged", {"plan": "gold"}, {"Viewed": 3, "Bought": 1}, later),
        ]
    )
    assert await store.merge("merge-1", "survivor", ["merged"]) is True
    assert await store.merge("merge-1", "survivor", ["merged"]) is False  # redelivered
    profile = await store.get("survivor")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 5, "Bought": 1}
    assert profile.traits == {"plan": "gold", "city": "Oslo"}  # the newer profile's plan
    assert (profile.first_seen, profile.last_seen) == (T0, later)
    # The merged id answers with the survivor, and late events for it land there.
    via_old = await store.get("merged")
    assert via_old is not None
    assert via_old.customer_id == "survivor"
    assert await store.apply([delta("late", "merged", name="Bought")]) == 1
    profile = await store.get("survivor")
    assert profile is not None
    assert profile.event_counts == {"Viewed": 5, "Bought": 2}
    tombstone = await db["profiles"].find_one({"_id": "merged"})
    assert tombstone == {"_id": "merged", "merged_into": "survivor"}


async def test_merge_follows_a_survivor_merged_away_since(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=100)
    await store.apply([delta("a", "c-a"), delta("b", "c-b"), delta("c", "c-c")])
    await store.merge("m-1", "c-a", ["c-b"])
    await store.merge("m-2", "c-c", ["c-a"])
    await store.merge("m-late", "c-b", ["c-x"])  # arrives late, names a merged survivor
    profile = await store.get("c-x")
    assert profile is not None
    assert profile.customer_id == "c-c"
    assert profile.event_counts == {"Viewed": 3}


async def test_pii_traits_rest_encrypted_and_read_back_in_clear(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    from tests.support.identity import cipher

    store = ProfileStore(db, 100, cipher(), frozenset({"email", "phone", "address"}))
    email, phone = "ada.lovelace@engine.example", "+442079460958"
    address = {"street": "12 St James's Square", "city": "London"}
    await store.apply(
        [
            ProfileDelta("p1", "c1", {"email": email, "phone": phone, "plan": "gold"}, {}, T0),
            ProfileDelta("p2", "c1", {"address": address}, {}, T0),
        ]
    )
    raw = await db["profiles"].find_one({"_id": "c1"})
    assert raw is not None
    assert email not in str(raw)
    assert phone not in str(raw)
    assert "James" not in str(raw)
    assert raw["traits"] == {"plan": "gold"}
    profile = await store.get("c1")
    assert profile is not None
    assert profile.traits == {"email": email, "phone": phone, "plan": "gold", "address": address}

    # A merge carries the encrypted traits over without ever decrypting them.
    await store.apply([ProfileDelta("p3", "c0", {"plan": "free"}, {}, T0 - timedelta(days=1))])
    await store.merge("m", "c0", ["c1"])
    merged = await store.get("c0")
    assert merged is not None
    assert merged.traits["email"] == email
    assert merged.traits["plan"] == "gold"  # c1 was seen more recently
    raw = await db["profiles"].find_one({"_id": "c0"})
    assert email not in str(raw)


async def test_timeline_pages_newest_first_keeps_pii_encrypted_and_is_erased(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    from services.profile.fold import ResolvedEvent
    from services.profile.timeline import TimelineSettings
    from tests.support.identity import cipher

    store = ProfileStore(db, 100, cipher(), frozenset({"email"}), TimelineSettings(cap=4))
    await store.ensure_indexes()
    events = [
        ResolvedEvent(
            f"t{n}", "c1", "track", f"Step {n}", T0 + timedelta(minutes=n), properties={"n": n}
        )
        for n in range(6)
    ]
    events.append(
        ResolvedEvent(
            "id1",
            "c1",
            "identify",
            "",
            T0 + timedelta(minutes=9),
            traits={"email": "hidden@example.com", "plan": "gold"},
        )
    )
    await store.record(events)
    await store.record(events[:3])  # redelivered: stored once
    assert await db["timeline"].count_documents({"customer_id": "c1"}) == 7
    raw = await db["timeline"].find_one({"_id": "id1"})
    assert "hidden@example.com" not in str(raw)

    first = await store.list_timeline("c1", 2, None)
    assert [d["_id"] for d in first] == ["id1", "t5"]
    assert first[0]["traits"] == {"email": "hidden@example.com", "plan": "gold"}
    second = await store.list_timeline("c1", 2, (first[-1]["at"], first[-1]["_id"]))
    assert [d["_id"] for d in second] == ["t4", "t3"]

    await store.erase("c1")
    assert await db["timeline"].count_documents({"customer_id": "c1"}) == 0


def activity(event_id: str, minute: int, customer: str = "c1") -> ProfileDelta:
    at = T0 + timedelta(minutes=minute)
    return ProfileDelta(event_id, customer, {}, {"Viewed": 1}, at, active_at=at)


async def test_sessions_join_across_batches_and_late_events_bridge_them(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    store = ProfileStore(db, dedupe_window=100)
    await store.apply([activity("a", 0), activity("b", 10)])
    await store.apply([activity("c", 50), activity("d", 200)])
    profile = await store.get("c1")
    assert profile is not None
    assert profile.sessions == sessions.Sessions(
        3, T0 + timedelta(minutes=200), T0 + timedelta(minutes=200)
    )
    # A late event at minute 30 is within 30 minutes of both 10 and 50: one session.
    await store.apply([activity("late", 30)])
    await store.apply([activity("late", 30)])  # redelivered: no change
    profile = await store.get("c1")
    assert profile is not None
    assert profile.sessions.count == 2


async def test_activity_kept_for_sessions_is_bounded(db: AsyncIOMotorDatabase[Document]) -> None:
    keep = 3
    for n in range(5):
        expression = sessions.append_expression([T0 + timedelta(hours=n)], keep)
        await db["profiles"].update_one(
            {"_id": "c1"}, [{"$set": {"activity": expression}}], upsert=True
        )
    doc = await db["profiles"].find_one({"_id": "c1"})
    assert doc is not None
    assert [t.replace(tzinfo=UTC) for t in doc["activity"]] == [
        T0 + timedelta(hours=h) for h in (2, 3, 4)
    ]


async def test_merge_joins_sessions_of_both_profiles(db: AsyncIOMotorDatabase[Document]) -> None:
    store = ProfileStore(db, dedupe_window=100)
    await store.apply([activity("s1", 0, "survivor"), activity("s2", 100, "survivor")])
    await store.apply([activity("m1", 20, "merged"), activity("m2", 300, "merged")])
    await store.merge("merge-s", "survivor", ["merged"])
    profile = await store.get("survivor")
    assert profile is not None
    # 0 and 20 are one session; 100 and 300 are their own.
    assert profile.sessions.count == 3
    assert profile.sessions.last_started_at == T0 + timedelta(minutes=300)


async def test_what_the_profile_store_reads_back_has_exactly_its_records_fields(
    db: AsyncIOMotorDatabase[Document],
) -> None:
    """The records are ``TypedDict`` casts of what the fold wrote: this pins that every
    stored shape is the one its record names (a renamed or extra field fails here)."""
    from services.profile import records
    from services.profile.fold import ResolvedEvent, fold

    def keys(record: type) -> set[str]:
        return set(get_type_hints(record))

    store = ProfileStore(db, 100)
    at = [T0 + timedelta(minutes=m) for m in range(5)]
    events = [
        ResolvedEvent("r1", "c1", "page", "Shoes", at[0], source="web"),
        ResolvedEvent(
            "r2",
            "c1",
            "track",
            "Consent Updated",
            at[1],
            properties={"purpose": "email_marketing", "state": "granted"},
            source="web",
        ),
        ResolvedEvent("r3", "c1", "track", "Product Added", at[2], properties={"sku": "s-1"}),
        ResolvedEvent(
            "r4", "c1", "track", "Order Completed", at[3], properties={"order_id": "o1", "total": 5}
        ),
        ResolvedEvent("r5", "c1", "screen", "Home", at[4], traits={"plan": "gold"}),
    ]
    await store.apply([fold(e) for e in events])
    await store.record(events)
    profile = await store.get("c1")
    assert profile is not None
    assert set(profile.consent["email_marketing"]) == keys(records.ConsentState)
    assert [set(e) for e in profile.consent_history] == [keys(records.ConsentEntry)]
    assert set(profile.cart) == keys(records.StoredCart)
    assert set(profile.cart["last_added"]) == keys(records.CartAddition)
    assert set(profile.cart["last_ordered"]) == keys(records.CartOrder)
    assert profile.last_page is not None
    assert profile.last_screen is not None
    assert set(profile.last_page) == set(profile.last_screen) == keys(records.ViewedAt)

    timeline = await store.list_timeline("c1", 10, None)
    assert [e["_id"] for e in timeline] == ["r5", "r4", "r3", "r2", "r1"]
    assert all(set(e) == keys(records.TimelineRecord) for e in timeline)

    export = await store.export("c1")
    assert set(export) == keys(records.ProfileExport)
    assert [set(o) for o in export["orders"]] == [keys(records.ExportedOrder)]
    assert all(set(e) == keys(records.ExportedEvent) for e in export["events"])
    assert await store.export("nobody") == {}
