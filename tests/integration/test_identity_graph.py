"""The identity graph over a real MongoDB-wire server: resolution, merges, limits, blocked
values, normalisation, concurrency, PII at rest and erasure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from services.identity.plan import ACTIVE
from services.identity.records import MergeRecord
from services.identity.rules import IdentityRules
from services.identity.store import IdentityStore
from services.platform.errors import InvalidArgument
from services.platform.mongo import Document
from tests.support.identity import event, fresh_store, resolver


@pytest.fixture
async def store(client: AsyncIOMotorClient[Document]) -> IdentityStore:
    return await fresh_store(client)


async def partition(store: IdentityStore) -> set[frozenset[str]]:
    """Identifier keys grouped by customer; every owner must be an active customer."""
    groups: dict[str, set[str]] = {}
    async for doc in store.identifiers.find({}, {"customer_id": 1}):
        groups.setdefault(doc["customer_id"], set()).add(doc["_id"])
    for customer_id in groups:
        customer = await store.customers.find_one({"_id": customer_id})
        assert customer is not None, f"identifiers point at missing customer {customer_id}"
        assert customer["status"] == ACTIVE, f"orphans under {customer['status']} {customer_id}"
    return {frozenset(g) for g in groups.values()}


async def test_anonymous_devices_then_identify_merge_into_the_oldest(store: IdentityStore) -> None:
    r = resolver(store)
    phone_session = await r.resolve([event("e1", ("anonymous_id", "phone-1"), minute=0)])
    laptop_session = await r.resolve([event("e2", ("anonymous_id", "laptop-1"), minute=5)])
    assert phone_session.created == [True]
    assert phone_session.customer_ids != laptop_session.customer_ids

    login = await r.resolve(
        [
            event(
                "e3",
                ("user_id", "u-1"),
                ("email", "Ada@Example.com"),
                ("anonymous_id", "phone-1"),
                minute=9,
            )
        ]
    )
    assert login.customer_ids == phone_session.customer_ids
    assert login.created == [False]
    second = await r.resolve(
        [event("e4", ("user_id", "u-1"), ("anonymous_id", "laptop-1"), minute=12)]
    )
    survivor = phone_session.customer_ids[0]
    assert second.customer_ids == [survivor]
    [merge] = second.merges
    assert merge.survivor_id == survivor
    assert merge.merged_ids == laptop_session.customer_ids
    assert merge.caused_by_event_id == "e4"
    history = await store.merge_history(survivor)
    assert [h["merged_ids"] for h in history] == [laptop_session.customer_ids]
    assert await store.current_id(laptop_session.customer_ids[0]) == survivor
    assert len(await partition(store)) == 1
    values = {(i.type, i.value) for i in await store.identities(survivor)}
    assert values == {
        ("user_id", "u-1"),
        ("email", "ada@example.com"),
        ("anonymous_id", "phone-1"),
        ("anonymous_id", "laptop-1"),
    }


async def test_merge_history_is_read_back_as_typed_merge_records(store: IdentityStore) -> None:
    r = resolver(store)
    await r.resolve([event("h1", ("user_id", "u-7"), ("anonymous_id", "tablet-1"), minute=0)])
    await r.resolve([event("h2", ("anonymous_id", "tv-1"), minute=1)])
    merged = await r.resolve([event("h3", ("user_id", "u-7"), ("anonymous_id", "tv-1"), minute=2)])
    [merge] = merged.merges
    [record] = await store.merge_history(merge.survivor_id)
    # Exactly the fields the record names, with the types it names (what the API reads).
    assert set(record) == MergeRecord.__required_keys__
    assert record == MergeRecord(
        _id=merge.merge_id,
        survivor_id=merge.survivor_id,
        merged_ids=merge.merged_ids,
        caused_by_event_id="h3",
        at=merge.at,
    )
    assert record["at"].tzinfo is not None


async def test_redelivered_batch_changes_nothing(store: IdentityStore) -> None:
    r = resolver(store)
    batch = [
        event("a", ("anonymous_id", "x1")),
        event("b", ("anonymous_id", "x2"), minute=1),
        event("c", ("anonymous_id", "x1"), ("anonymous_id", "x2"), ("user_id", "u"), minute=2),
    ]
    first = await r.resolve(batch)
    before = await partition(store)
    merges = await store.merges.count_documents({})
    again = await r.resolve(batch)
    assert again.customer_ids == first.customer_ids
    assert await partition(store) == before
    assert await store.merges.count_documents({}) == merges == 1


async def test_shared_device_with_a_second_user_makes_a_new_customer(
    store: IdentityStore,
) -> None:
    r = resolver(store)
    first = await r.resolve([event("e1", ("user_id", "u-1"), ("device_id", "ipad-7"))])
    other = await r.resolve([event("e2", ("user_id", "u-2"), ("device_id", "ipad-7"), minute=1)])
    assert other.customer_ids != first.customer_ids
    assert other.conflicts == 1
    conflict = await store.conflicts.find_one({"event_id": "e2"})
    assert conflict is not None
    assert conflict["type"] == "device_id"
    assert "user_id" in conflict["reason"]


async def test_email_limit_keeps_the_sixth_address_out(store: IdentityStore) -> None:
    r = resolver(store)
    for n in range(5):
        await r.resolve([event(f"e{n}", ("user_id", "u-1"), ("email", f"a{n}@x.com"))])
    sixth = await r.resolve([event("e6", ("user_id", "u-1"), ("email", "a6@x.com"))])
    [customer] = set(sixth.customer_ids)
    emails = [i for i in await store.identities(customer) if i.type == "email"]
    assert len(emails) == 5
    assert sixth.conflicts == 1
    assert await store.owner_of(store.key_of("email", "a6@x.com")) is None


async def test_merge_cap_limits_customers_combined_by_one_event(
    client: AsyncIOMotorClient[Document],
) -> None:
    store = await fresh_store(client, IdentityRules.build(max_customers_per_event=3))
    r = resolver(store)
    for n in range(4):
        await r.resolve([event(f"d{n}", ("device_id", f"dev-{n}"), minute=n)])
    outcome = await r.resolve(
        [event("all", *[("device_id", f"dev-{n}") for n in range(4)], minute=9)]
    )
    assert len(outcome.merges[0].merged_ids) == 2
    assert outcome.conflicts == 1
    assert len(await partition(store)) == 2


async def test_blocked_values_never_link(store: IdentityStore) -> None:
    r = resolver(store)
    zeros = ("device_id", "00000000-0000-0000-0000-000000000000")
    one = await r.resolve([event("e1", ("user_id", "u-1"), zeros, ("email", "test@test.com"))])
    two = await r.resolve([event("e2", ("user_id", "u-2"), zeros, ("anonymous_id", "null"))])
    assert one.customer_ids != two.customer_ids
    assert await store.identifiers.count_documents({}) == 2
    with pytest.raises(InvalidArgument, match="no usable identifier"):
        await r.resolve([event("e3", zeros, ("anonymous_id", "undefined"))])


async def test_normalisation_links_spellings_and_keeps_plus_addresses(
    store: IdentityStore,
) -> None:
    r = resolver(store)
    a = await r.resolve([event("e1", ("email", " Ada@Example.COM "), ("phone", "(650) 253-0000"))])
    b = await r.resolve([event("e2", ("email", "ada@example.com"), minute=1)])
    c = await r.resolve([event("e3", ("phone", "+1 650-253-0000"), minute=2)])
    d = await r.resolve([event("e4", ("email", "ada+news@example.com"), minute=3)])
    assert a.customer_ids == b.customer_ids == c.customer_ids
    assert d.customer_ids != a.customer_ids
    phones = [i.value for i in await store.identities(a.customer_ids[0]) if i.type == "phone"]
    assert phones == ["+16502530000"]
    with pytest.raises(InvalidArgument, match="phone is not a valid number"):
        await r.resolve([event("e5", ("phone", "12345"))])


async def test_fifty_concurrent_resolves_of_one_new_email_make_one_customer(
    store: IdentityStore,
) -> None:
    r = resolver(store)
    outcomes = await asyncio.gather(
        *(
            r.resolve([event(f"c{n}", ("email", "new@example.com"), ("anonymous_id", f"a{n}"))])
            for n in range(50)
        )
    )
    customers = {o.customer_ids[0] for o in outcomes}
    assert len(customers) == 1
    assert await store.identifiers.count_documents({"type": "email"}) == 1
    assert len(await partition(store)) == 1


async def test_merging_from_both_sides_at_once_leaves_one_survivor(store: IdentityStore) -> None:
    r = resolver(store)
    left = await r.resolve([event("l", ("user_id", "u-1"), ("anonymous_id", "left"))])
    right = await r.resolve([event("r", ("email", "b@x.com"), ("anonymous_id", "right"), minute=1)])
    both = await asyncio.gather(
        r.resolve([event("x", ("anonymous_id", "left"), ("email", "b@x.com"), minute=2)]),
        r.resolve([event("y", ("anonymous_id", "right"), ("user_id", "u-1"), minute=2)]),
    )
    survivor = left.customer_ids[0]
    assert {o.customer_ids[0] for o in both} == {survivor}
    assert await store.current_id(right.customer_ids[0]) == survivor
    assert await partition(store) == {frozenset(await _keys(store, survivor))}
    assert len(await _keys(store, survivor)) == 4


async def _keys(store: IdentityStore, customer_id: str) -> list[str]:
    return [d["_id"] async for d in store.identifiers.find({"customer_id": customer_id})]


async def _all_documents(store: IdentityStore) -> list[Any]:
    docs = []
    for name in await store.db.list_collection_names():
        docs += [str(d) async for d in store.db[name].find({})]
    return docs


async def test_email_and_phone_are_never_stored_in_clear_and_erase_leaves_no_trace(
    store: IdentityStore,
) -> None:
    r = resolver(store)
    email, phone = "grace.hopper@navy.example", "+442079460958"
    outcome = await r.resolve(
        [
            event("p1", ("user_id", "u-9"), ("email", email), ("phone", phone)),
            event("p2", ("anonymous_id", "dev-9"), ("email", email), minute=1),
        ]
    )
    customer = outcome.customer_ids[0]
    email_index = store.key_of("email", email).key
    stored = " ".join(await _all_documents(store))
    assert email not in stored
    assert phone not in stored
    assert email_index in stored  # found by its blind index...
    shown = {(i.type, i.value) for i in await store.identities(customer)}
    assert ("email", email) in shown  # ...and shown decrypted
    assert ("phone", phone) in shown

    removed = await store.erase(customer, outcome_time())
    assert removed == 4
    stored = " ".join(await _all_documents(store))
    assert email not in stored
    assert phone not in stored
    assert email_index not in stored
    assert store.key_of("phone", phone).key not in stored
    # A later event with the same e-mail starts a new customer.
    again = await r.resolve([event("p3", ("email", email), minute=5)])
    assert again.customer_ids != [customer]
    assert again.created == [True]


def outcome_time() -> Any:
    from tests.support.identity import T0

    return T0


async def test_key_rotation_reencrypts_and_reindexes(store: IdentityStore) -> None:
    from services.platform.crypto import FieldCipher, generate_key, parse_key
    from tests.support.identity import KEYS

    r = resolver(store)
    outcome = await r.resolve([event("k1", ("email", "rot@example.com"), ("user_id", "u-r"))])
    customer = outcome.customer_ids[0]
    # New active key k2 and a new index key: the documented procedure's second step.
    store.cipher = FieldCipher(KEYS, "k2", parse_key(generate_key()))
    assert await store.owner_of(store.key_of("email", "rot@example.com")) is None
    check = await store.rotate_keys(check_only=True)
    assert (check.rotated, check.left, check.stale_index, check.left_by_key) == (0, 1, 1, {"k1": 1})
    done = await store.rotate_keys()
    assert (done.rotated, done.left, done.unreadable) == (1, 0, 0)
    assert await store.owner_of(store.key_of("email", "rot@example.com")) == customer
    doc = await store.identifiers.find_one({"type": "email"})
    assert doc is not None
    assert doc["enc"]["kid"] == "k2"
    again = await store.rotate_keys()  # running it again changes nothing
    assert (again.rotated, again.left, again.checked) == (0, 0, 1)


async def test_key_rotation_resumes_after_a_crash_between_copy_and_delete(
    store: IdentityStore,
) -> None:
    from services.platform.crypto import FieldCipher, generate_key, parse_key
    from tests.support.identity import KEYS

    r = resolver(store)
    outcome = await r.resolve([event("c1", ("email", "crash@example.com"), ("user_id", "u-c"))])
    old = await store.identifiers.find_one({"type": "email"})
    assert old is not None
    store.cipher = FieldCipher(KEYS, "k2", parse_key(generate_key()))
    # The first run copied the identifier to its new key (still under k1), then stopped.
    await store.identifiers.insert_one(
        {**old, "_id": store.key_of("email", "crash@example.com").key}
    )
    done = await store.rotate_keys()
    assert (done.left, done.unreadable) == (0, 0)
    docs = await store.identifiers.find({"type": "email"}).to_list(None)
    assert [d["_id"] for d in docs] == [store.key_of("email", "crash@example.com").key]
    assert docs[0]["enc"]["kid"] == "k2"
    assert (
        await store.owner_of(store.key_of("email", "crash@example.com"))
        == (outcome.customer_ids[0])
    )


async def test_last_seen_is_buffered_and_moves_at_most_once_per_resolution(
    store: IdentityStore,
) -> None:
    r = resolver(store)  # one-minute resolution
    await r.resolve([event("s1", ("user_id", "u-seen"), minute=0)])
    await r.resolve([event("s2", ("user_id", "u-seen"), minute=0)])
    assert await r.flush_last_seen() == 0  # same minute: nothing to write
    await r.resolve([event("s3", ("user_id", "u-seen"), minute=5)])
    doc = await store.identifiers.find_one({"_id": "user_id:u-seen"})
    assert doc is not None
    assert doc["last_seen"] == doc["first_seen"]  # buffered, not written yet
    assert await r.flush_last_seen() == 1
    doc = await store.identifiers.find_one({"_id": "user_id:u-seen"})
    assert doc is not None
    assert (doc["last_seen"] - doc["first_seen"]).total_seconds() == 300
