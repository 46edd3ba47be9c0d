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
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.local.servers import KafkaWireServer, MongoWireServer, free_port
from lodestar.v1 import common_pb2, events_pb2, profile_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.mongo import database, mongo_client
from services.segmentation.audience import Audiences
from services.segmentation.consumers import ProfileChangeHandler, profile_document
from services.segmentation.rules import parse
from services.segmentation.segments import LIVE, Catalog, Segment
from services.segmentation.store import SegmentationStore

NOW = datetime(2026, 11, 1, tzinfo=UTC)
TIERS = ("Bronze", "Silver", "Gold", "Platinum")
PATHS = ("orders", "loyalty", "consent", "behaviour", "event_counts.Product Viewed", "traits.plan")


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count on every line."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def rules(count: int, seed: int) -> list[dict[str, Any]]:
    """A mix marketers write: spend and order thresholds, tiers, consent, activity windows,
    plans, combinations, a few event conditions."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for n in range(count):
        kind = n % 10
        if kind == 0:
            rule: dict[str, Any] = {
                "field": "orders.revenue",
                "op": "gt",
                "value": rng.randint(50, 900),
            }
        elif kind == 1:
            rule = {"field": "loyalty.tier", "op": "in", "value": rng.sample(TIERS, 2)}
        elif kind == 2:
            rule = {
                "all": [
                    {"field": "consent.email_marketing", "op": "eq", "value": "granted"},
                    {"field": "orders.count", "op": "gte", "value": rng.randint(1, 5)},
                ]
            }
        elif kind == 3:
            rule = {
                "field": "behaviour.last_active_at",
                "op": "within_last_days",
                "value": rng.randint(1, 30),
            }
        elif kind == 4:
            rule = {"field": "traits.plan", "op": "eq", "value": rng.choice("abc")}
        elif kind == 5:
            rule = {
                "field": "event_counts.Product Viewed",
                "op": "gte",
                "value": rng.randint(1, 20),
            }
        elif kind == 6:
            rule = {
                "any": [
                    {"field": "behaviour.cart_open", "op": "eq", "value": True},
                    {
                        "field": "loyalty.points",
                        "op": "between",
                        "value": [100, rng.randint(200, 900)],
                    },
                ]
            }
        elif kind == 7:
            rule = {"not": {"field": "consent.sms_marketing", "op": "eq", "value": "granted"}}
        elif kind == 8:
            rule = {"field": "traits.email", "op": "exists", "value": True}
        else:
            rule = {"event": "Product Viewed", "count": {"gte": 2}, "within_last_days": 7}
        out.append(rule)
    return out


def change(n: int, customer: str, rng: random.Random) -> events_pb2.ProfileChanged:
    """A profile change as the profile service announces it."""
    revenue = rng.randint(0, 100_000)
    profile = profile_pb2.Profile(
        customer_id=customer,
        event_counts={"Product Viewed": rng.randint(0, 30), "Order Completed": rng.randint(0, 5)},
        orders=profile_pb2.OrdersSummary(
            order_count=rng.randint(0, 8),
            revenue=[common_pb2.Money(currency="EUR", amount_minor=revenue)],
            average_order_value=common_pb2.Money(currency="EUR", amount_minor=revenue // 3),
        ),
        loyalty=profile_pb2.Loyalty(tier=rng.choice(TIERS), points=rng.randint(0, 1_000)),
        consent=[
            profile_pb2.ConsentState(
                purpose="email_marketing", state=rng.choice(["granted", "denied"])
            ),
            profile_pb2.ConsentState(
                purpose="sms_marketing", state=rng.choice(["granted", "denied"])
            ),
        ],
        behaviour=profile_pb2.Behaviour(
            cart_open=rng.random() < 0.2, session_count=rng.randint(1, 9)
        ),
    )
    profile.traits.update({"plan": rng.choice("abc")})
    profile.behaviour.last_active_at.FromDatetime(NOW - timedelta(hours=rng.randint(0, 900)))
    message = events_pb2.ProfileChanged(
        event_id=f"pc-{n}",
        customer_id=customer,
        changed_paths=rng.sample(PATHS, 2),
        profile=profile,
        trait_names=["plan", "email"] if rng.random() < 0.5 else ["plan"],
    )
    message.changed_at.FromDatetime(NOW)
    return message


def changes(count: int, customers: int, seed: int) -> list[events_pb2.ProfileChanged]:
    rng = random.Random(seed)
    return [change(n, f"cust-{rng.randrange(customers)}", rng) for n in range(count)]


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


async def through_kafka(
    catalog: Catalog, stream: Sequence[events_pb2.ProfileChanged], mongo_uri: str, bootstrap: str
) -> float:
    """Changes/s through Kafka into the real handler against SecantusDB."""
    await ensure_topics(bootstrap, {topics.PROFILE_CHANGED: 6, topics.SEGMENTS_MEMBERSHIP: 6})
    bus = Bus(BusConfig(bootstrap, "bench-segmentation", session_timeout_ms=2000))
    await bus.start()
    client = mongo_client(mongo_uri, "bench")
    store = SegmentationStore(database(client, "bench_rt", "segmentation"), 90 * 86_400)
    await store.ensure_indexes()
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
    started = time.perf_counter()
    consuming = asyncio.create_task(subscription.run())
    await asyncio.wait_for(done.wait(), timeout=1_800)
    elapsed = time.perf_counter() - started
    await subscription.stop()
    await consuming
    await bus.stop()
    client.close()
    return handled / elapsed


async def backfill(mongo_uri: str, profiles: int, seed: int) -> list[dict[str, object]]:
    """Seconds to backfill a new segment over ``profiles`` views."""
    client = mongo_client(mongo_uri, "bench")
    store = SegmentationStore(database(client, "bench_bf", "segmentation"), 90 * 86_400)
    await store.ensure_indexes()
    rng = random.Random(seed)
    for start in range(0, profiles, 1_000):
        docs = [profile_document(change(n, f"b-{n}", rng)) for n in range(start, start + 1_000)]
        await store.profiles.insert_many(docs, ordered=False)
    audiences = Audiences(store, None, clock=lambda: NOW)
    results = []
    cases = {
        "pushed_down": {
            "all": [
                {"field": "orders.revenue", "op": "gt", "value": 500},
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
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    catalog = Catalog(segments(args.segments, args.seed))
    stream = changes(args.changes, args.customers, args.seed)
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
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-") as logs:
        mongo = MongoWireServer(free_port(), Path(logs))
        kafka = KafkaWireServer(free_port(), Path(logs))
        mongo.start()
        kafka.start()
        try:
            kafka_rate = asyncio.run(
                through_kafka(catalog, stream, mongo.uri, kafka.bootstrap_servers)
            )
            emit(
                {
                    "metric": "segmentation_kafka_changes_per_s",
                    "value": round(kafka_rate, 1),
                    "changes": len(stream),
                    "segments": args.segments,
                    "target": 2_000,
                }
            )
            for record in asyncio.run(backfill(mongo.uri, args.profiles, args.seed)):
                emit(record)
        finally:
            kafka.stop()
            mongo.stop()


if __name__ == "__main__":
    main()
