"""Property: for any sequence of events over a pool of identifiers, delivered in any order
with duplicates and cut into any batches, the graph stored in MongoDB partitions the
identifiers exactly as a simple reference model of the rules does, and no identifier is in
two customers or left under a merged one."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.servers import MongoWireServer
from services.identity.plan import ACTIVE
from services.identity.rules import IdentityRules
from services.identity.store import IdentityStore, storage_key
from services.platform.mongo import mongo_client
from tests.support.identity import cipher, event, fresh_store, resolver

RULES = IdentityRules.build(
    limits={"user_id": 1, "email": 2, "device_id": 2, "anonymous_id": 3},
    max_customers_per_event=3,
)
POOL = [
    *(("user_id", f"u{n}") for n in range(3)),
    *(("email", f"p{n}@x.com") for n in range(3)),
    *(("device_id", f"d{n}") for n in range(3)),
    *(("anonymous_id", f"a{n}") for n in range(4)),
]
Ident = tuple[str, str]


class ReferenceModel:
    """The rules, written plainly: priority order, limits, merge cap, merge into the oldest."""

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules
        self.owner: dict[Ident, str] = {}
        self.members: dict[str, set[Ident]] = {}
        self.created: dict[str, int] = {}

    def key(self, ident: Ident) -> str:
        # Ties between equally strong identifiers go by the stored key, as on every replica.
        return storage_key(cipher(), self.rules, ident[0], self.rules.normalize(*ident)).key

    def strength(self, ident: Ident) -> tuple[int, str]:
        return self.rules.rank(ident[0]), self.key(ident)

    def resolve(self, event_id: str, idents: list[Ident], order: int) -> None:
        linking = sorted(set(idents), key=self.strength)
        while True:
            owners = list(dict.fromkeys(self.owner[i] for i in linking if i in self.owner))
            drop = self.to_drop(linking, owners)
            if drop is None:
                break
            linking = [i for i in linking if i not in drop]
        owners = list(dict.fromkeys(self.owner[i] for i in linking if i in self.owner))
        if not owners:
            survivor = event_id
            self.created[survivor] = order
            self.members[survivor] = set()
        else:
            survivor = min(owners, key=lambda c: (self.created[c], c))
            for other in owners:
                if other != survivor:
                    for i in self.members.pop(other):
                        self.owner[i] = survivor
                        self.members[survivor].add(i)
        for i in linking:
            if i not in self.owner:
                self.owner[i] = survivor
                self.members[survivor].add(i)

    def to_drop(self, linking: list[Ident], owners: list[str]) -> set[Ident] | None:
        def links(owner: str) -> list[Ident]:
            return [i for i in linking if self.owner.get(i) == owner]

        def weakest(candidates: list[tuple[tuple[int, int, str], list[Ident]]]) -> set[Ident]:
            return set(max(candidates)[1])

        if len(owners) > self.rules.max_customers_per_event:
            return weakest(
                [
                    ((self.rules.rank(links(o)[0][0]), 0, self.key(links(o)[0])), links(o))
                    for o in owners
                ]
            )
        new = [i for i in linking if i not in self.owner]
        for type_ in sorted(
            {i[0] for i in linking} | {m[0] for o in owners for m in self.members[o]},
            key=self.rules.rank,
        ):
            count = sum(1 for i in new if i[0] == type_) + sum(
                1 for o in owners for m in self.members[o] if m[0] == type_
            )
            have = [sum(1 for m in self.members[o] if m[0] == type_) for o in owners]
            if count <= max([self.rules.limit(type_), *have]):
                continue
            candidates = [
                ((self.rules.rank(i[0]), 1, self.key(i)), [i]) for i in new if i[0] == type_
            ]
            candidates += [
                ((self.rules.rank(links(o)[0][0]), 0, self.key(links(o)[0])), links(o))
                for o, n in zip(owners, have, strict=True)
                if n > 0
            ]
            return weakest(candidates)
        return None

    def partition(self) -> set[frozenset[Ident]]:
        return {frozenset(m) for m in self.members.values() if m}


events_strategy = st.lists(
    st.lists(st.sampled_from(POOL), min_size=1, max_size=4), min_size=1, max_size=14
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=events_strategy, data=st.data())
def test_stored_graph_matches_the_reference_model(
    mongo_server: MongoWireServer, events: list[list[Ident]], data: st.DataObject
) -> None:
    ids = [f"ev{n}" for n in range(len(events))]
    # Delivered in any order, some more than once (redelivery), cut into any batches.
    deliveries = data.draw(
        st.permutations(ids + data.draw(st.lists(st.sampled_from(ids), max_size=5)))
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(deliveries) - 1)), max_size=4)))
    first_seen = {e: deliveries.index(e) for e in ids}
    by_id = dict(zip(ids, events, strict=True))

    model = ReferenceModel(RULES)
    for event_id in deliveries:
        model.resolve(event_id, by_id[event_id], first_seen[event_id])
    once = ReferenceModel(RULES)
    for event_id in dict.fromkeys(deliveries):
        once.resolve(event_id, by_id[event_id], first_seen[event_id])
    assert model.partition() == once.partition(), "the rules are not idempotent"

    stored, expected = asyncio.run(
        _run(mongo_server, deliveries, cuts, by_id, first_seen, model.partition())
    )
    assert stored == expected


async def _run(
    mongo_server: MongoWireServer,
    deliveries: list[str],
    cuts: list[int],
    by_id: dict[str, list[Ident]],
    first_seen: dict[str, int],
    model: set[frozenset[Ident]],
) -> tuple[set[frozenset[str]], set[frozenset[str]]]:
    client = mongo_client(mongo_server.uri, "tests")
    try:
        store = await fresh_store(client, RULES)
        r = resolver(store)
        bounds = [0, *cuts, len(deliveries)]
        for start, end in itertools.pairwise(bounds):
            batch = [event(e, *by_id[e], minute=first_seen[e]) for e in deliveries[start:end]]
            if batch:
                await r.resolve(batch)
        expected = {
            frozenset(store.key_of(t, RULES.normalize(t, v)).key for t, v in group)
            for group in model
        }
        return await _stored_partition(store), expected
    finally:
        client.close()


async def _stored_partition(store: IdentityStore) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    async for doc in store.identifiers.find({}, {"customer_id": 1}):
        groups.setdefault(doc["customer_id"], set()).add(doc["_id"])
    for customer_id in groups:
        customer = await store.customers.find_one({"_id": customer_id})
        assert customer is not None
        assert customer["status"] == ACTIVE, "identifiers left under a merged customer"
    return {frozenset(g) for g in groups.values()}
