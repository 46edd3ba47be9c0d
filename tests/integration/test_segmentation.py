"""Segmentation against real SecantusDB and Tansu: real-time membership changes exactly
once under redelivery, event conditions, backfill agreeing with real time, the segment
lifecycle over gRPC, scores, erasure."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import KafkaWireServer, MongoWireServer
from lodestar.v1 import common_pb2, events_pb2, profile_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.dbops import DB_OPERATIONS
from services.platform.errors import PoisonMessage
from services.platform.mongo import Document, database, mongo_client
from services.platform.rpc import GrpcServer
from services.segmentation import clv
from services.segmentation.api import SegmentationServicer
from services.segmentation.audience import Audiences
from services.segmentation.consumers import (
    ProfileChangeHandler,
    ResolvedEventHandler,
    merge_handler,
)
from services.segmentation.definitions import SegmentDefinitions
from services.segmentation.records import MemberRecord, ProfileView, StoredSegment
from services.segmentation.rules import Rule, parse
from services.segmentation.scoring import Scoring, summary_of
from services.segmentation.segments import LIVE, Catalog, Segment
from services.segmentation.server import SERVICE_NAME
from services.segmentation.store import SegmentationStore
from tests.support.kafka import eventually, read_all, unique

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
PII = frozenset({"email", "phone"})


def segment(segment_id: str, rule: dict[str, Any], version: int = 1) -> Segment:
    return Segment(segment_id, segment_id, version, parse(rule, PII), LIVE)


def profile_change(
    customer: str,
    event_id: str,
    *,
    tier: str = "Bronze",
    revenue: int = 0,
    paths: Sequence[str] = ("loyalty",),
    traits: dict[str, Any] | None = None,
) -> Delivery[events_pb2.ProfileChanged]:
    profile = profile_pb2.Profile(
        customer_id=customer,
        loyalty=profile_pb2.Loyalty(tier=tier),
        orders=profile_pb2.OrdersSummary(
            order_count=1 if revenue else 0,
            revenue=[common_pb2.Money(currency="EUR", amount_minor=revenue)],
            average_order_value=common_pb2.Money(currency="EUR", amount_minor=revenue),
        ),
    )
    profile.traits.update(traits or {})
    change = events_pb2.ProfileChanged(
        event_id=event_id,
        customer_id=customer,
        changed_paths=list(paths),
        profile=profile,
        trait_names=sorted(traits or {}),
    )
    change.changed_at.FromDatetime(NOW)
    return Delivery("changed", 0, 0, None, change.SerializeToString(), change)


def track(
    customer: str, event_id: str, name: str, at: datetime, **properties: Any
) -> Delivery[events_pb2.Event]:
    props = Struct()
    props.update(properties)
    event = events_pb2.Event(
        event_id=event_id,
        customer_id=customer,
        type=events_pb2.EVENT_TYPE_TRACK,
        name=name,
        properties=props,
    )
    event.timestamp.FromDatetime(at)
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


@pytest.fixture
async def store(mongo_server: MongoWireServer) -> AsyncIterator[SegmentationStore]:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    store = SegmentationStore(
        database(client, unique("seg").replace("-", "_"), "segmentation"), 30 * 86_400
    )
    await store.ensure_indexes()
    yield store
    client.close()


@pytest.fixture
async def bus(kafka_server: KafkaWireServer) -> AsyncIterator[Bus]:
    await ensure_topics(kafka_server.bootstrap_servers, {topics.SEGMENTS_MEMBERSHIP: 6})
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, "test-segmentation"))
    await bus.start()
    yield bus
    await bus.stop()


async def membership_events(
    bootstrap: str, customer: str
) -> list[events_pb2.SegmentMembershipChanged]:
    records = await read_all(bootstrap, topics.SEGMENTS_MEMBERSHIP)
    found = [events_pb2.SegmentMembershipChanged.FromString(r.value) for r in records]
    return [e for e in found if e.customer_id == customer]


async def test_entering_and_leaving_emit_one_event_each_also_under_redelivery(
    store: SegmentationStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    gold = segment("gold", {"field": "loyalty.tier", "op": "eq", "value": "Gold"})
    plan = segment("pro", {"field": "traits.plan", "op": "eq", "value": "pro"})
    audiences = Audiences(store, bus, Catalog([gold, plan]), clock=lambda: NOW)
    handler = ProfileChangeHandler(audiences)
    customer = unique("c")
    upgraded = [profile_change(customer, "e1", tier="Gold")]
    await handler(upgraded)
    await handler(upgraded)  # redelivered
    assert set((await store.memberships_of([customer]))[customer]) == {"gold"}
    downgraded = [profile_change(customer, "e2", tier="Silver")]
    await handler(downgraded)
    await handler(downgraded)
    events = await membership_events(kafka_server.bootstrap_servers, customer)
    assert [(e.segment_id, e.change) for e in events] == [
        ("gold", events_pb2.MEMBERSHIP_CHANGE_ENTERED),
        ("gold", events_pb2.MEMBERSHIP_CHANGE_EXITED),
    ]
    assert await store.memberships_of([customer]) == {customer: {}}


async def test_only_segments_reading_a_changed_path_are_evaluated(
    store: SegmentationStore,
) -> None:
    gold = segment("gold", {"field": "loyalty.tier", "op": "eq", "value": "Gold"})
    audiences = Audiences(store, None, Catalog([gold]), clock=lambda: NOW)
    customer = unique("c")
    # The tier is Gold, but the change says only traits changed: gold is not re-evaluated.
    await ProfileChangeHandler(audiences)(
        [profile_change(customer, "e1", tier="Gold", paths=["traits.plan"])]
    )
    assert await store.memberships_of([customer]) == {customer: {}}
    await ProfileChangeHandler(audiences)([profile_change(customer, "e2", tier="Gold")])
    assert set((await store.memberships_of([customer]))[customer]) == {"gold"}


async def test_event_conditions_with_windows_enter_on_the_qualifying_event(
    store: SegmentationStore,
) -> None:
    shoes = segment(
        "shoe-browsers",
        {
            "event": "Product Viewed",
            "where": [{"field": "category", "op": "eq", "value": "shoes"}],
            "count": {"gte": 3},
            "within_last_days": 7,
        },
    )
    audiences = Audiences(store, None, Catalog([shoes]), clock=lambda: NOW)
    customer = unique("c")
    await ProfileChangeHandler(audiences)([profile_change(customer, "p1")])
    handler = ResolvedEventHandler(audiences)
    await handler(
        [track(customer, "v0", "Product Viewed", NOW - timedelta(days=9), category="shoes")]
    )
    await handler(
        [track(customer, "v1", "Product Viewed", NOW - timedelta(days=1), category="shoes")]
    )
    await handler([track(customer, "v2", "Product Viewed", NOW, category="hats")])
    assert await store.memberships_of([customer]) == {customer: {}}  # old, and hats
    await handler([track(customer, "v3", "Product Viewed", NOW, category="shoes")])
    await handler([track(customer, "v3", "Product Viewed", NOW, category="shoes")])  # redelivered
    assert await store.memberships_of([customer]) == {customer: {}}  # still two in the window
    await handler([track(customer, "v4", "Product Viewed", NOW, category="shoes")])
    assert set((await store.memberships_of([customer]))[customer]) == {"shoe-browsers"}


RULES: list[dict[str, Any]] = [
    {"field": "loyalty.tier", "op": "in", "value": ["Gold", "Platinum"]},
    {"field": "orders.revenue", "op": "gt", "value": 50},
    {
        "all": [
            {"field": "orders.revenue", "op": "lte", "value": 80},
            {"not": {"field": "traits.plan", "op": "eq", "value": "pro"}},
        ]
    },
    {"field": "traits.email", "op": "exists", "value": True},
]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Bronze", "Silver", "Gold", "Platinum"]),
            st.integers(0, 100_00),
            st.sampled_from([{}, {"plan": "pro"}, {"plan": "free"}, {"email": "x"}]),
        ),
        min_size=1,
        max_size=12,
    )
)
async def test_real_time_and_backfill_give_the_same_members(
    mongo_server: MongoWireServer, profiles: list[tuple[str, int, dict[str, str]]]
) -> None:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    try:
        stores = [
            SegmentationStore(
                database(client, unique(name).replace("-", "_"), "segmentation"), 86_400
            )
            for name in ("rt", "bf")
        ]
        segments = [segment(f"s{i}", r) for i, r in enumerate(RULES)]
        realtime = Audiences(stores[0], None, Catalog(segments), clock=lambda: NOW)
        backfill = Audiences(stores[1], None, Catalog(segments), clock=lambda: NOW)
        changes = [
            profile_change(
                f"c{n}",
                f"e{n}",
                tier=t,
                revenue=r,
                traits=tr,
                paths=["loyalty", "orders", "traits"],
            )
            for n, (t, r, tr) in enumerate(profiles)
        ]
        await ProfileChangeHandler(realtime)(changes)
        await stores[1].save_profiles([_document(c.message) for c in changes])
        for s in segments:
            await backfill.reconcile(s)
        ids = [f"c{n}" for n in range(len(profiles))]
        assert await stores[0].memberships_of(ids) == await _without_since(
            stores[1], ids, stores[0]
        )
    finally:
        client.close()


def _document(change: events_pb2.ProfileChanged) -> Document:
    from services.segmentation.consumers import profile_document

    return profile_document(change)


async def _without_since(
    store: SegmentationStore, ids: list[str], other: SegmentationStore
) -> dict[str, dict[str, MemberRecord]]:
    """The other store's memberships with the backfill's 'since' values, so only who is in
    which segment is compared."""
    mine = await store.memberships_of(ids)
    theirs = await other.memberships_of(ids)
    for customer, segments in mine.items():
        for segment_id, doc in segments.items():
            if segment_id in theirs.get(customer, {}):
                doc["since"] = theirs[customer][segment_id]["since"]
    return mine


class Service:
    def __init__(
        self,
        stub: segmentation_pb2_grpc.SegmentationServiceAsyncStub,
        store: SegmentationStore,
        definitions: SegmentDefinitions,
    ) -> None:
        self.stub = stub
        self.store = store
        self.definitions = definitions


@pytest.fixture
async def service(store: SegmentationStore, bus: Bus) -> AsyncIterator[Service]:
    audiences = Audiences(store, bus)
    definitions = SegmentDefinitions(store, audiences, PII)
    servicer = SegmentationServicer(definitions, store, Scoring(store, definitions))
    server = GrpcServer(
        "127.0.0.1",
        0,
        [SERVICE_NAME],
        lambda s: segmentation_pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, s),
        default_deadline_s=10,
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Service(segmentation_pb2_grpc.SegmentationServiceStub(channel), store, definitions)
    await server.stop(0)


async def test_segment_lifecycle_over_grpc(service: Service) -> None:
    stub, store = service.stub, service.store
    views = [
        _document(profile_change(f"m{n}", f"e{n}", revenue=n * 10_00).message) for n in range(7)
    ]
    await store.save_profiles(views)
    rule = {"field": "orders.revenue", "op": "gte", "value": 30}
    created = await stub.CreateSegment(
        segmentation_pb2.CreateSegmentRequest(name="Big spenders", rule_json=json.dumps(rule))
    )
    assert (created.id, created.version) == ("big-spenders", 1)
    assert created.reads_paths == ["orders"]

    async def live() -> bool:
        got = await stub.GetSegment(segmentation_pb2.GetSegmentRequest(id="big-spenders"))
        return got.status == segmentation_pb2.SEGMENT_STATUS_LIVE and got.size == 4

    await eventually(live, 20, "the backfill to finish")
    first = await stub.Members(
        segmentation_pb2.MembersRequest(segment_id="big-spenders", page_size=3)
    )
    second = await stub.Members(
        segmentation_pb2.MembersRequest(
            segment_id="big-spenders", page_size=3, page_token=first.next_page_token
        )
    )
    assert [m.customer_id for m in first.members] + [m.customer_id for m in second.members] == [
        "m3",
        "m4",
        "m5",
        "m6",
    ]
    assert first.total == 4
    assert second.next_page_token == ""
    # Each member's cursor is a page token continuing right after it.
    assert first.members[-1].cursor == first.next_page_token
    after_first = await stub.Members(
        segmentation_pb2.MembersRequest(
            segment_id="big-spenders", page_size=2, page_token=first.members[0].cursor
        )
    )
    assert [m.customer_id for m in after_first.members] == ["m4", "m5"]
    mine = await stub.MembershipsFor(
        segmentation_pb2.MembershipsForRequest(customer_ids=["m5", "m1"])
    )
    assert [s.segment_id for s in mine.memberships["m5"].segments] == ["big-spenders"]
    assert list(mine.memberships["m1"].segments) == []

    updated = await stub.UpdateSegment(
        segmentation_pb2.UpdateSegmentRequest(
            id="big-spenders", rule_json=json.dumps({**rule, "value": 60})
        )
    )
    assert updated.version == 2

    async def narrowed() -> bool:
        got = await stub.GetSegment(segmentation_pb2.GetSegmentRequest(id="big-spenders"))
        return got.status == segmentation_pb2.SEGMENT_STATUS_LIVE and got.size == 1

    await eventually(narrowed, 20, "the second backfill")
    deleted = await stub.DeleteSegment(segmentation_pb2.DeleteSegmentRequest(id="big-spenders"))
    assert deleted.members_exited == 1
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetSegment(segmentation_pb2.GetSegmentRequest(id="big-spenders"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "code", "named"),
    [
        (
            segmentation_pb2.CreateSegmentRequest(name="x", rule_json="{"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "JSON",
        ),
        (
            segmentation_pb2.CreateSegmentRequest(
                name="x",
                rule_json='{"all": [{"field": "orders.revenue", "op": "gt", "value": "a lot"}]}',
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "all[0]",
        ),
        (
            segmentation_pb2.CreateSegmentRequest(
                name="x", rule_json='{"field": "traits.email", "op": "eq", "value": "a@b.c"}'
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "email",
        ),
        (
            segmentation_pb2.CreateSegmentRequest(
                name="", rule_json='{"field": "orders.count", "op": "gt", "value": 1}'
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "name",
        ),
        (
            segmentation_pb2.CreateSegmentRequest(
                id="Bad Id", name="x", rule_json='{"field": "orders.count", "op": "gt", "value": 1}'
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "id",
        ),
    ],
)
async def test_bad_definitions_are_refused_naming_what_is_wrong(
    service: Service,
    request_: segmentation_pb2.CreateSegmentRequest,
    code: grpc.StatusCode,
    named: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await service.stub.CreateSegment(request_)
    assert failed.value.code() == code
    assert named in (failed.value.details() or "")


async def test_a_taken_id_is_already_exists(service: Service) -> None:
    rule = '{"field": "orders.count", "op": "gt", "value": 1}'
    await service.stub.CreateSegment(
        segmentation_pb2.CreateSegmentRequest(id="repeat", name="Repeat", rule_json=rule)
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await service.stub.CreateSegment(
            segmentation_pb2.CreateSegmentRequest(id="repeat", name="Repeat", rule_json=rule)
        )
    assert failed.value.code() == grpc.StatusCode.ALREADY_EXISTS


def identity_merged(
    event_id: str, survivor: str, merged: Sequence[str]
) -> Delivery[events_pb2.IdentityMerged]:
    merge = events_pb2.IdentityMerged(
        event_id=event_id, survivor_id=survivor, merged_ids=list(merged)
    )
    return Delivery("merged", 0, 0, None, merge.SerializeToString(), merge)


async def test_a_merged_customer_leaves_its_segments_and_its_events_follow_the_survivor(
    store: SegmentationStore, bus: Bus, kafka_server: KafkaWireServer
) -> None:
    gold = segment("gold", {"field": "loyalty.tier", "op": "eq", "value": "Gold"})
    audiences = Audiences(store, bus, Catalog([gold]), clock=lambda: NOW)
    merged, survivor = unique("c"), unique("c")
    await ProfileChangeHandler(audiences)([profile_change(merged, "e1", tier="Gold")])
    await ResolvedEventHandler(audiences)(
        [track(merged, unique("ev"), "Product Viewed", NOW - timedelta(hours=1))]
    )
    assert set((await store.memberships_of([merged]))[merged]) == {"gold"}
    handler = merge_handler(audiences)
    # The survivor named among the merged ids, and an id named twice, change nothing more.
    await handler([identity_merged("m1", survivor, [merged, survivor, merged])])
    assert await store.memberships_of([merged]) == {merged: {}}
    assert await store.profiles_for([merged]) == {}
    since = NOW - timedelta(days=1)
    moved = await store.events_for([merged, survivor], since)
    assert moved[merged] == []
    assert [e.name for e in moved[survivor]] == ["Product Viewed"]
    events = await membership_events(kafka_server.bootstrap_servers, merged)
    assert [(e.segment_id, e.change) for e in events] == [
        ("gold", events_pb2.MEMBERSHIP_CHANGE_ENTERED),
        ("gold", events_pb2.MEMBERSHIP_CHANGE_EXITED),
    ]
    with pytest.raises(PoisonMessage):
        await handler([identity_merged("m2", "", [survivor])])


async def test_erasure_leaves_nothing_of_the_customer(store: SegmentationStore) -> None:
    gold = segment("gold", {"field": "loyalty.tier", "op": "eq", "value": "Gold"})
    audiences = Audiences(store, None, Catalog([gold]), clock=lambda: NOW)
    customer = unique("gone")
    await ProfileChangeHandler(audiences)([profile_change(customer, "e1", tier="Gold")])
    await ResolvedEventHandler(audiences)([track(customer, "t1", "Viewed", NOW)])
    assert (await store.export(customer))["segments"][0]["segment_id"] == "gold"
    await audiences.remove_customer(customer, "erase")
    await store.erase(customer)
    for name in await store.db.list_collection_names():
        async for doc in store.db[name].find({}):
            assert customer not in str(doc), name
    assert await store.export(customer) == {}


async def test_scoring_fits_scores_everyone_and_updates_score_segments(
    store: SegmentationStore,
) -> None:
    import random

    rng = random.Random(3)
    views = []
    for n in range(60):
        first = NOW - timedelta(days=rng.randint(100, 400))
        days = rng.choice([1, 1, 2, 3, 5, 8])
        last = first + timedelta(days=rng.randint(0, (NOW - first).days)) if days > 1 else first
        views.append(
            {
                "_id": f"s{n}",
                "orders": {
                    "count": days,
                    "revenue": 40.0 * days,
                    "first_order_at": first,
                    "last_order_at": last,
                    "purchase_days": days,
                    "repeat_average": round(rng.uniform(10, 120), 2) if days > 1 else 0.0,
                },
            }
        )
    views.append({"_id": "no-orders", "orders": {"count": 0}})
    await store.profiles.insert_many(views)
    at_risk = segment("at-risk", {"field": "scores.p_alive", "op": "lt", "value": 0.5})
    audiences = Audiences(store, None, Catalog([at_risk]), clock=lambda: NOW)
    definitions = SegmentDefinitions(store, audiences, PII)
    run = await Scoring(store, definitions).recompute(now=NOW)
    assert run.model_version == "bgnbd-gg-1"
    assert run.customers == 60
    assert set(json.loads(run.parameters_json)["bgnbd"]) == {"r", "alpha", "a", "b"}
    scores = await store.scores_of([f"s{n}" for n in range(60)] + ["no-orders"])
    assert len(scores) == 60
    for doc in scores.values():
        assert 0.0 <= doc["p_alive"] <= 1.0
        assert doc["expected_purchases_90d"] >= doc["expected_purchases_30d"] >= 0.0
        assert doc["clv_12m"] >= 0.0
        assert doc["rfm_cell"]
    one_timers = [doc for doc in scores.values() if doc["frequency"] == 1]
    assert all(doc["p_alive"] == pytest.approx(1.0) for doc in one_timers)  # BG/NBD: x = 0
    members = {m async for m in store.member_ids("at-risk")}
    assert members == {c for c, doc in scores.items() if doc["p_alive"] < 0.5}
    assert members  # the synthetic histories include lapsed repeat buyers
    view = (await store.profiles_for(["s1"]))["s1"]
    assert view["scores"]["p_alive"] == scores["s1"]["p_alive"]  # rules read the copy


def purchase_views(count: int, seed: int) -> list[Document]:
    """Profile views of ``count`` buyers with varied histories (a third bought once)."""
    rng = random.Random(seed)
    views: list[Document] = []
    for n in range(count):
        first = NOW - timedelta(days=rng.randint(30, 700))
        days = rng.choice([1, 1, 2, 3, 4, 6, 9, 14])
        last = first + timedelta(days=rng.randint(0, (NOW - first).days)) if days > 1 else first
        views.append(
            {
                "_id": f"big{n:05d}",
                "orders": {
                    "count": days,
                    "revenue": round(rng.uniform(15, 90) * days, 2),
                    "first_order_at": first,
                    "last_order_at": last,
                    "purchase_days": days,
                    "repeat_average": round(rng.uniform(10, 150), 2) if days > 1 else 0.0,
                },
            }
        )
    return views


async def test_the_event_loop_keeps_running_while_the_purchase_models_fit(
    store: SegmentationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    views = purchase_views(1_500, seed=16)
    await store.profiles.insert_many(views)
    audiences = Audiences(store, None, Catalog([]), clock=lambda: NOW)
    definitions = SegmentDefinitions(store, audiences, PII)
    ticks = 0

    async def heartbeat() -> None:
        # Stands in for a gRPC call or a consumer's heartbeat: it needs the loop now and then.
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    fit, score = clv.fit_customer_value, clv.score_customers
    seen: list[int] = []

    def counted_fit(*args: Any, **kwargs: Any) -> clv.CustomerValueModel:
        seen.append(ticks)
        return fit(*args, **kwargs)

    def counted_score(*args: Any, **kwargs: Any) -> dict[str, clv.CustomerScores]:
        result = score(*args, **kwargs)
        seen.append(ticks)
        return result

    monkeypatch.setattr(clv, "fit_customer_value", counted_fit)
    monkeypatch.setattr(clv, "score_customers", counted_score)
    beating = asyncio.create_task(heartbeat())
    try:
        run = await Scoring(store, definitions).recompute(now=NOW)
    finally:
        beating.cancel()
    assert len(seen) == 2, "the models were fitted and scored once"
    assert seen[1] > seen[0], "the event loop stood still for the whole fit"
    # The same model and scores as the fit run directly on the same histories.
    summaries = [s for s in (summary_of(v, NOW, 7.0) for v in views) if s is not None]
    model = fit(summaries, time_unit_days=7.0)
    assert run.model_version == model.model_version
    assert json.loads(run.parameters_json) == json.loads(json.dumps(model.as_dict()))
    expected = score(summaries, model)
    stored = await store.scores_of([v["_id"] for v in views])
    assert len(stored) == len(views)
    for customer, value in expected.items():
        assert stored[customer]["p_alive"] == value.p_alive
        assert stored[customer]["expected_purchases_90d"] == value.expected_purchases_90d
        assert stored[customer]["clv_12m"] == value.clv_12m


ABANDONED_CHECKOUT = {
    "event": "Checkout Started",
    "within_last_days": 30,
    "not_followed_by": {"event": "Order Completed", "within_hours": 48},
}


async def test_an_event_arriving_before_its_profile_change_still_qualifies(
    store: SegmentationStore,
) -> None:
    checkout = segment("abandoned", ABANDONED_CHECKOUT)
    audiences = Audiences(store, None, Catalog([checkout]), clock=lambda: NOW)
    customer = unique("c")
    # The event consumer runs first: no profile view yet, and the rule reads events only.
    await ResolvedEventHandler(audiences)(
        [track(customer, "k1", "Checkout Started", NOW - timedelta(days=3))]
    )
    assert set((await store.memberships_of([customer]))[customer]) == {"abandoned"}
    # Had it been evaluated too early, the profile change naming the event's counter
    # brings it back.
    await store.apply_memberships([], [("abandoned", customer)])
    change = profile_change(customer, "p1", paths=["event_counts.Checkout Started"])
    await ProfileChangeHandler(audiences)([change])
    assert set((await store.memberships_of([customer]))[customer]) == {"abandoned"}


async def test_a_profile_change_keeps_the_scores_of_the_view(store: SegmentationStore) -> None:
    audiences = Audiences(store, None, Catalog([]), clock=lambda: NOW)
    customer = unique("c")
    await ProfileChangeHandler(audiences)([profile_change(customer, "p1", traits={"plan": "a"})])
    await store.save_scores([{"_id": customer, "p_alive": 0.2, "rfm_cell": "At risk"}])
    await ProfileChangeHandler(audiences)([profile_change(customer, "p2", revenue=10_00)])
    view = (await store.profiles_for([customer]))[customer]
    assert view["scores"] == {"p_alive": 0.2, "rfm_cell": "At risk"}
    assert view["orders"]["revenue"] == 10.0
    assert "traits" in view
    assert view["traits"] == {}  # the newer profile has no traits: the old ones are gone


async def test_memberships_are_read_in_one_reply_per_chunk_and_entries_recorded_once(
    store: SegmentationStore,
) -> None:
    # 120 customers in 4 segments each: 480 memberships, past a cursor's first batch (101),
    # so reading them chunk by chunk once needed a getMore round trip after each find.
    customers = [f"c{n:03d}" for n in range(120)]
    since = datetime(2026, 11, 1, tzinfo=UTC)
    entries: list[MemberRecord] = [
        {
            "_id": f"s{s}:{c}",
            "segment_id": f"s{s}",
            "customer_id": c,
            "since": since,
            "segment_version": 1,
        }
        for c in customers
        for s in range(4)
    ]
    await store.apply_memberships(entries, [])
    # Redelivered: the same entries again (one newer) change nothing already recorded.
    again: list[MemberRecord] = [{**e, "since": since + timedelta(days=1)} for e in entries[:10]]
    await store.apply_memberships(again, [("s0", "c119")])
    before = DB_OPERATIONS.snapshot()[0]
    found = await store.memberships_of(customers)
    after = DB_OPERATIONS.snapshot()[0]
    database = store.db.name
    # Counted by (database, command, collection).
    asked = {
        k[1]: after[k] - before.get(k, 0)
        for k in after
        if after[k] != before.get(k, 0) and k[0] == database and k[2] == "memberships"
    }
    assert asked == {"find": 3}
    assert sum(len(v) for v in found.values()) == 479
    assert set(found["c119"]) == {"s1", "s2", "s3"}
    assert {d["since"] for v in found.values() for d in v.values()} == {since}


class _EntersDuringBackfill(SegmentationStore):
    """A store whose candidate stream, once read to the end, lets real time go first: a
    customer's qualifying event is evaluated while the backfill is still running."""

    realtime: Audiences
    customer: str

    async def stream_candidates(self, rule: Rule, now: datetime) -> AsyncIterator[ProfileView]:
        async for doc in super().stream_candidates(rule, now):
            yield doc
        await ResolvedEventHandler(self.realtime)(
            [track(self.customer, "late-1", "Checkout Started", NOW - timedelta(days=3))]
        )
        await self.save_profiles([_document(profile_change(self.customer, "p1").message)])


async def test_a_backfill_does_not_undo_an_entry_made_in_real_time_while_it_ran(
    mongo_server: MongoWireServer,
) -> None:
    checkout = segment("abandoned", ABANDONED_CHECKOUT)
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    try:
        store = _EntersDuringBackfill(
            database(client, unique("race").replace("-", "_"), "segmentation"), 30 * 86_400
        )
        await store.ensure_indexes()
        await store.save_profiles([_document(profile_change("someone-else", "p0").message)])
        audiences = Audiences(store, None, Catalog([checkout]), clock=lambda: NOW)
        store.realtime, store.customer = audiences, unique("c")
        # The backfill read every candidate before the event existed; real time then enters
        # the customer. The backfill's older picture must not take the entry back.
        assert await audiences.reconcile(checkout) == 0
        found = await store.memberships_of([store.customer])
        assert set(found.get(store.customer, {})) == {"abandoned"}
        # The next recheck sees the event and agrees: nothing to change.
        assert await audiences.reconcile(checkout) == 0
    finally:
        client.close()


class _SlowList(SegmentationStore):
    """A store whose segment list, once read, is held until ``release`` is set: a refresh
    that began before a segment was created ends after it."""

    read: asyncio.Event
    release: asyncio.Event

    async def list_segments(self) -> list[StoredSegment]:
        found = await super().list_segments()
        self.read.set()
        await self.release.wait()
        return found


async def test_a_refresh_that_began_before_a_change_does_not_undo_it(
    mongo_server: MongoWireServer,
) -> None:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    try:
        store = _SlowList(
            database(client, unique("refresh").replace("-", "_"), "segmentation"), 30 * 86_400
        )
        await store.ensure_indexes()
        store.read, store.release = asyncio.Event(), asyncio.Event()
        store.release.set()
        audiences = Audiences(store, None, Catalog([]), clock=lambda: NOW)
        definitions = SegmentDefinitions(store, audiences, PII)
        rule = json.dumps({"field": "loyalty.tier", "op": "eq", "value": "Gold"})
        await definitions.create("gone", "Gone", "", rule)
        store.read.clear()
        store.release.clear()
        refreshing = asyncio.create_task(definitions.refresh())
        await store.read.wait()
        # While the refresh holds the older list: one segment is created, one deleted.
        await definitions.create("fresh", "Fresh", "", rule)
        await definitions.delete("gone")
        store.release.set()
        await refreshing
        assert set(audiences.segment_names()) == {"fresh"}
        assert [s.id for s in audiences.reading(["loyalty.tier"])] == ["fresh"]
        # The next refresh reads the store as it is now, and agrees.
        await definitions.refresh()
        assert set(audiences.segment_names()) == {"fresh"}
        for task in list(definitions.backfills.values()):
            await task
    finally:
        client.close()
