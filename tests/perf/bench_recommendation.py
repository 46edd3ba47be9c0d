"""Recommendation benchmark.

(a) Training: the configured model (ALS by default) on MovieLens-100k, from interactions to a
    servable model: seconds.
(b) ``Recommend`` in-process: the servicer called directly (request validation, scoring every
    item, exclusions, top-n, the response message) for random customers, n=10, purchases
    excluded: p50/p99 in ms (target p99 <= 5 ms).
(c) ``Recommend`` over gRPC on the loopback at a fixed 200 requests/s (open loop: requests are
    sent on schedule whether or not earlier ones returned): p50/p99 in ms (target p99 <= 10 ms).
(d) Intake: 20,000 resolved events (product views, carts, orders with products, ratings, and
    events that feed no model) published to the resolved-events topic on a private Tansu and
    consumed by the service's own handler against a private SecantusDB (standalone): events/s
    until every batch is stored and committed; the service's handler and the handler as it
    was before the intake cuts (every item written in every batch, items then interactions
    in turn, every event's properties decoded) in turn, each on a fresh database. In the
    same run, the store floor: per batch of 500, one ``insert_many`` of the batch's
    interactions and one upsert of each item whose seen properties are new or changed, timed
    directly. Prints both, the ratio, and database operations and documents per event.

``--part`` picks parts (``serving`` = a-c, ``intake`` = d; both by default). Prints JSON lines
with the core count.
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
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo import UpdateOne

from lodestar.v1 import events_pb2, recommendation_pb2, recommendation_pb2_grpc
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.dbops import OperationCounter
from services.platform.destinations import RECOMMENDATIONS, event_allows
from services.platform.mongo import Document, database
from services.platform.rpc import GrpcServer
from services.platform.timestamps import time_of
from services.recommendation.api import RecommendationServicer
from services.recommendation.consumers import ResolvedEventHandler, event_interactions
from services.recommendation.datasets import movielens_catalog, movielens_ratings
from services.recommendation.interactions import (
    Interaction,
    InteractionWeights,
    ItemProperties,
    interactions_of,
    products_of,
)
from services.recommendation.recommender import Recommender
from services.recommendation.server import SERVICE_NAME
from services.recommendation.serving import Recommendations
from services.recommendation.settings import RecommendationSettings
from services.recommendation.store import RecommendationStore, interaction_document
from services.recommendation.trainer import Trainer
from services.recommendation.training import build_matrix, train_model
from tests.perf.dbcounts import Window
from tests.perf.servers import private_servers

# A stage that has not handled everything by then has stalled (seen once under load).
STALL_S = 300
T0 = datetime(2026, 11, 1, tzinfo=UTC)
CATEGORIES = ("shoes", "shirts", "bags", "watches", "hats")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency_record(name: str, seconds: list[float], **extra: Any) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "benchmark": name,
        "requests": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        **extra,
    }


async def main(calls: int, rate: float, seconds: float) -> None:
    settings = RecommendationSettings()
    config = settings.training_config()
    interactions = movielens_ratings()
    started = time.perf_counter()
    matrix = build_matrix(interactions, InteractionWeights(), interactions[0].at)
    model = train_model(matrix, config, InteractionWeights(), 1, interactions[0].at)
    emit(
        {
            "benchmark": "train_movielens_100k",
            "algorithm": config.algorithm,
            "factors": config.factors,
            "iterations": config.iterations,
            "threads": config.num_threads,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )

    serving = Recommendations(cast(RecommendationStore, None))
    serving.recommender = Recommender(model, {i.item_id: i for i in movielens_catalog()})
    servicer = RecommendationServicer(serving, cast(Trainer, None), cast(RecommendationStore, None))
    customers = model.customer_ids
    rng = random.Random(0)
    requests = [
        recommendation_pb2.RecommendRequest(
            customer_id=rng.choice(customers), n=10, exclude_purchased=True
        )
        for _ in range(calls)
    ]
    context = cast(Any, None)
    for request in requests[:200]:  # warm up
        await servicer.Recommend(request, context)
    timings = []
    for request in requests:
        begun = time.perf_counter()
        await servicer.Recommend(request, context)
        timings.append(time.perf_counter() - begun)
    emit(latency_record("recommend_in_process", timings, items=len(model.item_ids)))

    server = GrpcServer(
        "127.0.0.1",
        0,
        [SERVICE_NAME],
        lambda s: recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(servicer, s),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
            for request in requests[:200]:
                await stub.Recommend(request)
            latencies: list[float] = []
            failures = 0

            async def one(request: recommendation_pb2.RecommendRequest) -> None:
                nonlocal failures
                begun = time.perf_counter()
                try:
                    await stub.Recommend(request, timeout=5)
                except grpc.aio.AioRpcError:
                    failures += 1
                    return
                latencies.append(time.perf_counter() - begun)

            total = int(rate * seconds)
            interval = 1 / rate
            start = time.perf_counter()
            pending = []
            for k in range(total):
                delay = start + k * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(one(requests[k % len(requests)])))
            await asyncio.gather(*pending)
            achieved = total / (time.perf_counter() - start)
    finally:
        await server.stop(0)
    emit(
        latency_record(
            "recommend_grpc",
            latencies,
            target_rps=rate,
            achieved_rps=round(achieved, 1),
            failures=failures,
        )
    )


def _struct(values: dict[str, Any]) -> Struct:
    out = Struct()
    out.update(values)
    return out


def _product(rng: random.Random, items: int, prices: dict[str, float]) -> dict[str, Any]:
    """One product as events carry it; now and then its price changes (a sale)."""
    item = f"sku-{rng.randrange(items)}"
    if rng.random() < 0.01:
        prices[item] = round(rng.uniform(5, 300), 2)
    number = int(item.split("-")[1])
    return {
        "product_id": item,
        "name": f"Product {number}",
        "category": CATEGORIES[number % len(CATEGORIES)],
        "price": prices.setdefault(item, round(5 + number % 97 * 3.1, 2)),
        "image_url": f"https://shop.example.com/img/{item}.jpg",
    }


def intake_workload(events: int, customers: int, items: int, seed: int) -> list[events_pb2.Event]:
    """A storefront's resolved events: 45% product views, 12% carts, 8% orders of 1-4
    products, 10% ratings, 25% that feed no model (page views, identifies, searches)."""
    rng = random.Random(seed)
    prices: dict[str, float] = {}
    out = []
    for n in range(events):
        customer = f"cust-{rng.randrange(customers)}"
        event = events_pb2.Event(
            event_id=f"re-{n}", customer_id=customer, type=events_pb2.EVENT_TYPE_TRACK
        )
        roll = rng.random()
        if roll < 0.45:
            event.name = "Product Viewed"
            event.properties.CopyFrom(_struct(_product(rng, items, prices)))
        elif roll < 0.57:
            event.name = "Product Added"
            event.properties.CopyFrom(_struct({**_product(rng, items, prices), "quantity": 1}))
        elif roll < 0.65:
            event.name = "Order Completed"
            products = [_product(rng, items, prices) for _ in range(rng.randint(1, 4))]
            event.properties.CopyFrom(
                _struct({"order_id": f"o-{n}", "currency": "EUR", "products": products})
            )
        elif roll < 0.75:
            event.name = "Product Rated"
            event.properties.CopyFrom(
                _struct({"product_id": f"sku-{rng.randrange(items)}", "rating": rng.randint(1, 5)})
            )
        elif roll < 0.85:
            event.name = "Page Viewed"
            event.properties.CopyFrom(_struct({"path": f"/p/{rng.randrange(100)}"}))
        elif roll < 0.93:
            event.name = "Products Searched"
            event.properties.CopyFrom(_struct({"query": "red shoes"}))
        else:
            event.type = events_pb2.EVENT_TYPE_IDENTIFY
            event.traits.CopyFrom(_struct({"plan": rng.choice("abc")}))
        event.timestamp.FromDatetime(T0 + timedelta(seconds=n))
        out.append(event)
    return out


class HandlerBefore(ResolvedEventHandler):
    """The handler as it was before the intake cuts, for the side-by-side figure: every
    track event's properties decoded, item properties then interactions in turn (its store
    built with ``seen_cache_items=0`` writes every item of every batch)."""

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        """Item properties first, then the interactions of the whole batch."""
        interactions: list[Interaction] = []
        items: list[ItemProperties] = []
        for delivery in batch:
            event = delivery.message
            if event.type != events_pb2.EVENT_TYPE_TRACK or not event.customer_id:
                continue
            if not event_allows(event.integrations, RECOMMENDATIONS):
                continue
            properties = MessageToDict(event.properties) if event.HasField("properties") else {}
            found = interactions_of(
                event.event_id, event.customer_id, event.name, properties, time_of(event)
            )
            if found:
                interactions.extend(found)
                items.extend(products_of(event.name, properties))
        await self.store.save_seen_items(items, datetime.now(UTC))
        await self.store.save_interactions(interactions)


async def intake_through_kafka(
    events: Sequence[events_pb2.Event],
    handler: ResolvedEventHandler,
    bootstrap: str,
    topic: str,
    group: str,
) -> float:
    """Events/s from the first fetch until the service's handler stored every batch and the
    last offsets are committed (the events are on the topic before the clock starts)."""
    await ensure_topics(bootstrap, {topic: 6})
    bus = Bus(BusConfig(bootstrap, group, session_timeout_ms=2000))
    await bus.start()
    await bus.publish_many([(topic, e.customer_id, e) for e in events])
    handled = 0
    done = asyncio.Event()

    async def counted(batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        nonlocal handled
        await handler(batch)
        handled += len(batch)
        if handled >= len(events):
            done.set()

    subscription = bus.subscribe([topic], group, events_pb2.Event, counted)
    await subscription.start()
    started = time.perf_counter()
    consuming = asyncio.create_task(subscription.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=STALL_S)
    except TimeoutError:
        raise SystemExit(
            f"intake stalled: {handled} of {len(events)} handled after {STALL_S} s"
        ) from None
    await subscription.stop()
    await consuming
    elapsed = time.perf_counter() - started
    await bus.stop()
    return handled / elapsed


async def intake_floor(
    events: Sequence[events_pb2.Event], db: AsyncIOMotorDatabase[Document]
) -> float:
    """Events/s of the least the store needs: per batch of 500, one ``insert_many`` of the
    interactions and one upsert of each item whose seen properties are new or changed."""
    batches: list[tuple[list[Document], dict[str, dict[str, Any]]]] = []
    for start in range(0, len(events), 500):
        interactions: list[Document] = []
        items: dict[str, dict[str, Any]] = {}
        for event in events[start : start + 500]:
            found, products = event_interactions(event)
            interactions.extend(interaction_document(i) for i in found)
            items.update({p.item_id: dict(p.fields()) for p in products})
        batches.append((interactions, items))
    written: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for interactions, items in batches:
        upserts = [
            UpdateOne(
                {"_id": item_id},
                {"$set": {**{f"seen.{k}": v for k, v in fields.items()}, "updated_at": T0}},
                upsert=True,
            )
            for item_id, fields in items.items()
            if fields and written.get(item_id) != fields
        ]
        written.update(items)
        await asyncio.gather(
            db["interactions"].insert_many(interactions, ordered=False),
            db["items"].bulk_write(upserts, ordered=False) if upserts else asyncio.sleep(0),
        )
    return len(events) / (time.perf_counter() - started)


async def intake(mongo_uri: str, bootstrap: str, args: argparse.Namespace) -> None:
    """(d) The stage as it is and as before, then its store floor, on one server."""
    events = intake_workload(args.events, args.customers, args.items, args.seed)
    counter = OperationCounter()
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_uri,
        appname="bench-intake",
        tz_aware=True,
        event_listeners=[counter],
        socketTimeoutMS=STALL_S * 1000,
    )
    feeding = sum(1 for e in events if event_interactions(e)[0])
    rates: dict[str, float] = {}
    for round_ in range(args.rounds):
        # Who goes first alternates between rounds.
        for side in ("service", "before") if round_ % 2 == 0 else ("before", "service"):
            name = f"bench_{side}_{round_}"
            db = database(client, name, "recommendation")
            if side == "service":
                store = RecommendationStore(db)
                handler = ResolvedEventHandler(store)
            else:
                store = RecommendationStore(db, seen_cache_items=0)
                handler = HandlerBefore(store)
            await store.ensure_indexes()
            window = Window(counter, f"{name}_recommendation")
            window.start()
            rate = await intake_through_kafka(
                events, handler, bootstrap, f"{topics.EVENTS_RESOLVED}.{name}", name
            )
            rates[side] = rate
            counts = window.per(len(events), "event")
            stored = await store.count_interactions()
            emit(
                {
                    "benchmark": "recommendation_intake_events_per_s",
                    "handler": side,
                    "round": round_ + 1,
                    "value": round(rate, 1),
                    "events": len(events),
                    "feeding_events": feeding,
                    "interactions_stored": stored,
                    "customers": args.customers,
                    "items": args.items,
                    **counts,
                }
            )
        floor_db = database(client, f"bench_floor_{round_}", "recommendation")
        await floor_db["interactions"].create_index([("customer_id", 1)])
        await floor_db["interactions"].create_index([("at", 1)])
        window = Window(counter, f"bench_floor_{round_}_recommendation")
        window.start()
        floor = await intake_floor(events, floor_db)
        emit(
            {
                "benchmark": "recommendation_intake_store_floor_events_per_s",
                "round": round_ + 1,
                "value": round(floor, 1),
                "events": len(events),
                "note": "per batch of 500: one insert_many of the interactions + one upsert "
                "per item whose seen properties are new or changed; same server, same run",
                "intake_to_floor": round(rates["service"] / floor, 2),
                "before_to_floor": round(rates["before"] / floor, 2),
                "intake_to_before": round(rates["service"] / rates["before"], 2),
                **window.per(len(events), "event"),
            }
        )
    client.close()


def run_intake(args: argparse.Namespace) -> None:
    """Private servers (SecantusDB standalone) for part (d)."""
    with private_servers("standalone") as (mongo, kafka):
        asyncio.run(intake(mongo.uri, kafka.bootstrap_servers, args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="in-process calls")
    parser.add_argument("--rate", type=float, default=200.0, help="gRPC requests per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="gRPC run length")
    parser.add_argument("--part", choices=("serving", "intake", "all"), default="all")
    parser.add_argument("--events", type=int, default=20_000, help="(d): resolved events")
    parser.add_argument("--customers", type=int, default=2_000, help="(d): customers")
    parser.add_argument("--items", type=int, default=500, help="(d): products")
    parser.add_argument("--seed", type=int, default=7, help="(d): workload seed")
    parser.add_argument("--rounds", type=int, default=1, help="(d): times each side runs")
    arguments = parser.parse_args()
    if arguments.part in ("serving", "all"):
        asyncio.run(main(arguments.calls, arguments.rate, arguments.seconds))
    if arguments.part in ("intake", "all"):
        run_intake(arguments)
