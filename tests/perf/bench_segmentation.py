"""Segmentation benchmark (``make bench``).

(a) Real time: 100 live segments, 50,000 profile changes.
    - in-process: the segments a change can affect are picked by path and evaluated against
      the profile view (no I/O): changes/s;
    - through Kafka: the changes are published to ``profile.changed`` and the service's own
      handler consumes them against a local SecantusDB (views stored, memberships read and
      written, membership events published): changes/s.
(b) Backfill: a new segment over 100,000 profile views in SecantusDB: seconds, for a rule
    pushed down to a query and for one with an event condition (streamed).

Prints JSON lines with the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lodestar.v1 import common_pb2, events_pb2, profile_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.dbops import DB_OPERATIONS
from services.platform.mongo import Document, database, mongo_client
from services.segmentation.audience import Audiences
from services.segmentation.consumers import ProfileChangeHandler, profile_document
from services.segmentation.rules import parse
from services.segmentation.segments import LIVE, Catalog, Segment
from services.segmentation.store import SegmentationStore, membership_id
from tests.perf.costs import CLOCK_TICKS, cpu_ticks, pid_of
from tests.perf.dbcounts import Window
from tests.perf.servers import private_servers

NOW = datetime(2026, 11, 1, tzinfo=UTC)
MOVES = "lodestar_segment_membership_changes_total"
TIERS = ("Bronze", "Silver", "Gold", "Platinum")
PATHS = ("orders", "loyalty", "consent", "behaviour", "event_counts.Product Viewed", "traits.plan")


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count on every line."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def rules(count: int, seed: int) -> list[dict[str, Any]]:
    """A mix marketers write, each selecting a few percent to a third of the customers:
    spend and order thresholds, tiers, consent, plans, carts, combinations, three activity
    windows ("active in the last N days": every event of an inactive customer enters
    them), and one in ten with an event condition."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for n in range(count):
        kind = n % 10
        if kind == 0:
            rule: dict[str, Any] = {
                "field": "orders.revenue",
                "op": "gt",
                "value": rng.randint(600, 2_000),
            }
        elif kind == 1:
            rule = {"field": "loyalty.tier", "op": "eq", "value": rng.choice(TIERS[2:])}
        elif kind == 2:
            rule = {
                "all": [
                    {"field": "consent.email_marketing", "op": "eq", "value": "granted"},
                    {"field": "orders.count", "op": "gte", "value": rng.randint(4, 9)},
                ]
            }
        elif kind == 3 and n % 30 != 3:
            rule = {
                "field": "orders.average_order_value",
                "op": "gt",
                "value": rng.randint(90, 180),
            }
        elif kind == 3:
            rule = {
                "field": "behaviour.last_active_at",
                "op": "within_last_days",
                "value": rng.randint(1, 3),
            }
        elif kind == 4:
            rule = {"field": "traits.plan", "op": "eq", "value": f"plan-{rng.randrange(8)}"}
        elif kind == 5:
            rule = {
                "field": "event_counts.Product Viewed",
                "op": "gte",
                "value": rng.randint(20, 60),
            }
        elif kind == 6:
            rule = {
                "all": [
                    {"field": "behaviour.cart_open", "op": "eq", "value": True},
                    {"field": "loyalty.points", "op": "gt", "value": rng.randint(500, 1_500)},
                ]
            }
        elif kind == 7:
            rule = {
                "all": [
                    {"not": {"field": "consent.sms_marketing", "op": "eq", "value": "granted"}},
                    {"field": "orders.count", "op": "eq", "value": rng.randint(1, 3)},
                ]
            }
        elif kind == 8:
            rule = {
                "all": [
                    {"field": "traits.email", "op": "exists", "value": True},
                    {"field": "orders.count", "op": "eq", "value": 0},
                ]
            }
        else:
            rule = {"event": "Checkout Started", "count": {"gte": 2}, "within_last_days": 7}
        out.append(rule)
    return out


class Customer:
    """One customer's state, changed a little by each event, as a real profile is."""

    def __init__(self, customer_id: str, rng: random.Random) -> None:
        self.customer_id = customer_id
        self.orders = rng.choice([0, 0, 1, 1, 2, 3, 5])
        self.revenue_minor = self.orders * rng.randint(2_000, 20_000)
        self.views = rng.randint(0, 40)
        self.cart_open = rng.random() < 0.1
        self.plan = f"plan-{rng.randrange(8)}"
        self.email = rng.random() < 0.6
        self.consent = {
            p: rng.choice(["granted", "denied"]) for p in ("email_marketing", "sms_marketing")
        }
        self.last_active = NOW - timedelta(hours=rng.randint(0, 24 * 30))

    def tier(self) -> str:
        spend = self.revenue_minor / 100
        return TIERS[sum(spend >= t for t in (500, 1_500, 5_000))]

    def step(self, rng: random.Random) -> list[str]:
        """Apply one event; returns the paths it changed."""
        roll = rng.random()
        self.last_active = NOW
        if roll < 0.6:
            self.views += 1
            return ["event_counts.Product Viewed", "behaviour.sessions"]
        if roll < 0.75:
            self.cart_open = not self.cart_open
            return ["behaviour.cart", "behaviour.sessions"]
        if roll < 0.9:
            self.orders += 1
            self.revenue_minor += rng.randint(2_000, 20_000)
            self.cart_open = False
            return ["orders", "loyalty", "behaviour.cart", "event_counts.Order Completed"]
        if roll < 0.97:
            self.plan = f"plan-{rng.randrange(8)}"
            return ["traits.plan"]
        purpose = rng.choice(list(self.consent))
        self.consent[purpose] = "denied" if self.consent[purpose] == "granted" else "granted"
        return [f"consent.{purpose}"]

    def announce(self, event_id: str, paths: Sequence[str]) -> events_pb2.ProfileChanged:
        """The profile change the profile service publishes for the current state."""
        profile = profile_pb2.Profile(
            customer_id=self.customer_id,
            event_counts={"Product Viewed": self.views, "Order Completed": self.orders},
            orders=profile_pb2.OrdersSummary(
                order_count=self.orders,
                revenue=[common_pb2.Money(currency="EUR", amount_minor=self.revenue_minor)],
                average_order_value=common_pb2.Money(
                    currency="EUR", amount_minor=self.revenue_minor // max(1, self.orders)
                ),
            ),
            loyalty=profile_pb2.Loyalty(tier=self.tier(), points=self.revenue_minor // 100),
            consent=[profile_pb2.ConsentState(purpose=p, state=s) for p, s in self.consent.items()],
            behaviour=profile_pb2.Behaviour(cart_open=self.cart_open, session_count=3),
        )
        profile.traits.update({"plan": self.plan})
        profile.behaviour.last_active_at.FromDatetime(self.last_active)
        message = events_pb2.ProfileChanged(
            event_id=event_id,
            customer_id=self.customer_id,
            changed_paths=list(paths),
            profile=profile,
            trait_names=["plan", "email"] if self.email else ["plan"],
        )
        message.changed_at.FromDatetime(NOW)
        return message


def population(customers: int, seed: int) -> list[Customer]:
    rng = random.Random(seed)
    return [Customer(f"cust-{n}", rng) for n in range(customers)]


def changes(people: Sequence[Customer], count: int, seed: int) -> list[events_pb2.ProfileChanged]:
    """``count`` changes, each one event's worth on a random customer."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        person = people[rng.randrange(len(people))]
        out.append(person.announce(f"pc-{n}", person.step(rng)))
    return out


def segments(count: int, seed: int) -> list[Segment]:
    return [
        Segment(f"seg-{i}", f"Segment {i}", 1, parse(r), LIVE)
        for i, r in enumerate(rules(count, seed))
    ]


def in_process(catalog: Catalog, stream: Sequence[events_pb2.ProfileChanged]) -> tuple[float, int]:
    """Changes/s picking and evaluating segments against the views (no I/O)."""
    docs = [profile_document(c) for c in stream]
    started = time.perf_counter()
    evaluated = 0
    for message, doc in zip(stream, docs, strict=True):
        for segment in catalog.reading(message.changed_paths):
            segment.matches(doc, [], NOW)
            evaluated += 1
    return len(stream) / (time.perf_counter() - started), evaluated


async def warm_up(store: SegmentationStore, catalog: Catalog, docs: Sequence[Document]) -> int:
    """Views and memberships as they stand before the measured stream (not measured)."""
    for start in range(0, len(docs), 1_000):
        await store.profiles.insert_many(docs[start : start + 1_000], ordered=False)
    members = [
        {
            "_id": membership_id(s.id, d["_id"]),
            "segment_id": s.id,
            "customer_id": d["_id"],
            "since": NOW,
            "segment_version": 1,
        }
        for d in docs
        for s in catalog.segments.values()
        if s.matches(d, [], NOW)
    ]
    for start in range(0, len(members), 1_000):
        await store.memberships.insert_many(members[start : start + 1_000], ordered=False)
    return len(members)


async def through_kafka(
    catalog: Catalog,
    initial: Sequence[Document],
    stream: Sequence[events_pb2.ProfileChanged],
    mongo_uri: str,
    bootstrap: str,
    server_pid: int,
) -> tuple[float, float, int, int, dict[str, object]]:
    """Changes/s through Kafka into the real handler against SecantusDB, from a warm state
    (every customer's view and memberships stored); also the memberships before, the
    membership events the stream caused, and what the phase cost: the database operations
    and documents per change by command and collection, the server's and this process's CPU
    per change."""
    await ensure_topics(bootstrap, {topics.PROFILE_CHANGED: 6, topics.SEGMENTS_MEMBERSHIP: 6})
    bus = Bus(BusConfig(bootstrap, "bench-segmentation", session_timeout_ms=2000))
    await bus.start()
    client = mongo_client(mongo_uri, "bench")
    store = SegmentationStore(database(client, "bench_rt", "segmentation"), 90 * 86_400)
    await store.ensure_indexes()
    before = await warm_up(store, catalog, initial)
    audiences = Audiences(store, bus, catalog, clock=lambda: NOW)
    handler = ProfileChangeHandler(audiences)
    handled = 0
    done = asyncio.Event()

    async def counted(batch: Sequence[Delivery[events_pb2.ProfileChanged]]) -> None:
        nonlocal handled
        await handler(batch)
        handled += len(batch)
        if handled >= len(stream):
            done.set()

    await bus.publish_many([(topics.PROFILE_CHANGED, c.customer_id, c) for c in stream])
    subscription = bus.subscribe(
        [topics.PROFILE_CHANGED], "bench-seg", events_pb2.ProfileChanged, counted
    )
    await subscription.start()
    window = Window(DB_OPERATIONS, "bench_rt_segmentation")
    window.start()
    server_before, own_before = cpu_ticks(server_pid), os.times()
    started = time.perf_counter()
    consuming = asyncio.create_task(subscription.run())
    await asyncio.wait_for(done.wait(), timeout=1_800)
    elapsed = time.perf_counter() - started
    own = os.times()
    costs: dict[str, object] = {
        "seconds": round(elapsed, 2),
        "server_cpu_ms_per_change": round(
            (cpu_ticks(server_pid) - server_before) * 1000 / CLOCK_TICKS / len(stream), 3
        ),
        "handler_process_cpu_ms_per_change": round(
            (own.user + own.system - own_before.user - own_before.system) * 1000 / len(stream), 3
        ),
        **window.per(len(stream), "change"),
    }
    await subscription.stop()
    await consuming
    await bus.stop()
    floor_store = SegmentationStore(database(client, "bench_floor", "segmentation"), 86_400)
    started = time.perf_counter()
    for start in range(0, len(stream), 500):
        await floor_store.save_profiles([profile_document(c) for c in stream[start : start + 500]])
    floor = len(stream) / (time.perf_counter() - started)
    client.close()
    return (
        handled / elapsed,
        floor,
        before,
        int(
            sum(REGISTRY.get_sample_value(MOVES, {"change": c}) or 0 for c in ("entered", "exited"))
        ),
        costs,
    )


async def backfill(mongo_uri: str, profiles: int, seed: int) -> list[dict[str, object]]:
    """Seconds to backfill a new segment over ``profiles`` views."""
    client = mongo_client(mongo_uri, "bench")
    store = SegmentationStore(database(client, "bench_bf", "segmentation"), 90 * 86_400)
    await store.ensure_indexes()
    people = population(profiles, seed + 1)
    for start in range(0, profiles, 1_000):
        docs = [
            profile_document(p.announce(f"b-{p.customer_id}", []))
            for p in people[start : start + 1_000]
        ]
        await store.profiles.insert_many(docs, ordered=False)
    audiences = Audiences(store, None, clock=lambda: NOW)
    results = []
    cases = {
        "pushed_down": {
            "all": [
                {"field": "orders.revenue", "op": "gt", "value": 400},
                {"field": "consent.email_marketing", "op": "eq", "value": "granted"},
            ]
        },
        "streamed_with_events": {
            "all": [
                {"field": "loyalty.tier", "op": "eq", "value": "Gold"},
                {"event": "Product Viewed", "within_last_days": 7},
            ]
        },
    }
    for name, rule in cases.items():
        segment = Segment(f"new-{name}", name, 1, parse(rule), LIVE)
        started = time.perf_counter()
        entered = await audiences.reconcile(segment)
        results.append(
            {
                "metric": "segmentation_backfill_seconds",
                "case": name,
                "value": round(time.perf_counter() - started, 2),
                "profiles": profiles,
                "members": entered,
                "target": 30,
            }
        )
    client.close()
    return results


def main() -> None:
    """Start private servers, measure, stop them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    catalog = Catalog(segments(args.segments, args.seed))
    people = population(args.customers, args.seed)
    initial = [profile_document(p.announce(f"init-{p.customer_id}", [])) for p in people]
    stream = changes(people, args.changes, args.seed)
    rate, evaluated = in_process(catalog, stream)
    emit(
        {
            "metric": "segmentation_in_process_changes_per_s",
            "value": round(rate, 1),
            "changes": len(stream),
            "segments": args.segments,
            "evaluations": evaluated,
            "target": 5_000,
        }
    )
    with private_servers() as (mongo, kafka):
        assert mongo.process is not None
        kafka_rate, floor, before, moved, costs = asyncio.run(
            through_kafka(
                catalog, initial, stream, mongo.uri, kafka.bootstrap_servers, pid_of(mongo.process)
            )
        )
        emit(
            {
                "metric": "segmentation_kafka_changes_per_s",
                "value": round(kafka_rate, 1),
                "changes": len(stream),
                "customers": args.customers,
                "segments": args.segments,
                "memberships_before": before,
                "membership_events": moved,
                "target": 2_000,
            }
        )
        emit({"metric": "segmentation_kafka_costs", **costs})
        emit(
            {
                "metric": "segmentation_store_floor_changes_per_s",
                "value": round(floor, 1),
                "note": "only storing each change's profile view, batches of 500, same "
                "server, same run",
            }
        )
        for record in asyncio.run(backfill(mongo.uri, args.profiles, args.seed)):
            emit(record)


if __name__ == "__main__":
    main()
