"""Profile benchmark (``make bench``): fold 100,000 resolved events across 10,000 customers
on the consumer path (batched) against a local SecantusDB and Tansu on free ports.

Events are produced at a steady rate (the 3,000 events/s target by default) while the
consumer folds them, so the latency from an event's Kafka timestamp to its profile being
stored shows whether folding keeps up. The consumer's MongoDB work is counted with a command
listener (round trips, and statements: each update, inserted document or read) and printed per
event; ``--cprofile FILE`` also writes a profile of the run's Python CPU. ``--store-ab N``
first compares the store's writes alone, batch by batch in turn on the same server: the
floor's writes, every update as a pipeline (as before operator updates) and the store as it
is, so a loaded machine slows all three alike. Prints JSON lines with the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import UpdateOne, monitoring

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.crypto import FieldCipher, generate_key, parse_key
from services.platform.mongo import Document, database, mongo_client
from services.profile.consumers import ResolvedEventHandler, to_resolved_event
from services.profile.fold import MergedDelta, fold
from services.profile.store import ProfileStore
from tests.perf.servers import each_mode, mongo_modes, private_servers

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PII = frozenset({"email", "phone", "firstName", "lastName"})


# The MongoDB mode of the run in progress, on every line (set by main()).
RUN: dict[str, object] = {}


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count and the run's MongoDB mode on every line."""
    print(json.dumps({"cores": os.cpu_count(), **RUN, **record}), flush=True)


def struct(values: dict[str, Any]) -> Struct:
    out = Struct()
    out.update(values)
    return out


class OperationCounter(monitoring.CommandListener):
    """Counts the commands sent (round trips) and the statements they carry: each update,
    inserted document, delete or read (a find counts once, whatever it returns)."""

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()
        self.statements: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Count one command and its statements."""
        name = event.command_name
        if name in ("hello", "isMaster", "ismaster", "endSessions", "ping", "getMore"):
            return
        self.commands[name] += 1
        body = event.command
        many = {"insert": "documents", "update": "updates", "delete": "deletes"}.get(name)
        self.statements[name] += len(body[many]) if many else 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to count."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to count."""

    def per_event(self, events: int) -> dict[str, object]:
        """Round trips and statements per event, in total and by command."""
        return {
            "commands_per_event": round(sum(self.commands.values()) / events, 3),
            "statements_per_event": round(sum(self.statements.values()) / events, 3),
            "by_command": {
                name: {
                    "commands_per_event": round(n / events, 3),
                    "statements_per_event": round(self.statements[name] / events, 3),
                }
                for name, n in sorted(self.commands.items())
            },
        }


def workload(events: int, customers: int, seed: int) -> list[events_pb2.Event]:
    """A realistic mix: page and product views, carts, orders, some identify calls."""
    rng = random.Random(seed)
    out = []
    for n in range(events):
        customer = f"cust-{rng.randrange(customers)}"
        at = T0 + timedelta(seconds=n)
        roll = rng.random()
        event = events_pb2.Event(event_id=f"pe-{n}", customer_id=customer, source="bench")
        if roll < 0.1:
            event.type = events_pb2.EVENT_TYPE_IDENTIFY
            event.traits.CopyFrom(
                struct(
                    {
                        "email": f"{customer}@example.com",
                        "firstName": "Ada",
                        "plan": rng.choice("abc"),
                    }
                )
            )
        elif roll < 0.15:
            event.type = events_pb2.EVENT_TYPE_TRACK
            event.name = "Order Completed"
            event.properties.CopyFrom(
                struct({"order_id": f"o-{n}", "total": rng.randint(5, 400), "currency": "EUR"})
            )
        else:
            event.type = events_pb2.EVENT_TYPE_TRACK
            event.name = rng.choice(["Product Viewed", "Page Viewed", "Product Added"])
            event.properties.CopyFrom(struct({"product_id": f"sku-{rng.randrange(500)}"}))
        event.timestamp.FromDatetime(at)
        event.received_at.FromDatetime(at)
        out.append(event)
    return out


async def run(args: argparse.Namespace, mongo_uri: str, bootstrap: str) -> float:
    """Fold the workload on the consumer path; returns events/s."""
    events = workload(args.events, args.customers, args.seed)
    await ensure_topics(bootstrap, {topics.EVENTS_RESOLVED: 6})
    bus = Bus(BusConfig(bootstrap, "bench-profile", session_timeout_ms=2000))
    await bus.start()
    counter = OperationCounter()
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_uri, appname="bench", tz_aware=True, event_listeners=[counter]
    )
    cipher = FieldCipher({"k1": parse_key(generate_key())}, "k1", parse_key(generate_key()))
    store = ProfileStore(database(client, "bench", "profile"), 1_000, cipher, PII)
    handler = ResolvedEventHandler(store)
    latencies: list[float] = []
    handled = 0
    done = asyncio.Event()

    async def timed(batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        nonlocal handled
        await handler(batch)
        stored_at = time.time()
        latencies.extend(stored_at - d.timestamp_ms / 1000 for d in batch)
        handled += len(batch)
        if handled >= len(events):
            done.set()

    subscription = bus.subscribe([topics.EVENTS_RESOLVED], "bench-profile", events_pb2.Event, timed)
    await subscription.start()
    counter.commands.clear()
    counter.statements.clear()
    consuming = asyncio.create_task(subscription.run())
    started = time.perf_counter()
    chunk = max(1, args.rate // 20)
    for index in range(0, len(events), chunk):
        due = started + index / args.rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        part = events[index : index + chunk]
        await bus.publish_many([(topics.EVENTS_RESOLVED, e.customer_id, e) for e in part])
    await asyncio.wait_for(done.wait(), timeout=args.timeout)
    elapsed = time.perf_counter() - started
    await subscription.stop()
    await consuming
    ordered = sorted(latencies)
    operations = counter.per_event(handled)
    emit(
        {
            "metric": "profile_fold_events_per_s",
            "value": round(handled / elapsed, 1),
            "events": handled,
            "customers": args.customers,
            "offered_rate": args.rate,
            "seconds": round(elapsed, 2),
            "target": 2000,
        }
    )
    emit(
        {
            "metric": "profile_kafka_to_stored_ms",
            "p50": round(statistics.median(ordered) * 1000, 1),
            "p99": round(ordered[int(len(ordered) * 0.99)] * 1000, 1),
        }
    )
    emit({"metric": "profile_db_operations_per_event", **operations})
    await bus.stop()
    client.close()
    return handled / elapsed


async def store_floor(mongo_uri: str, events: list[events_pb2.Event]) -> float:
    """Events/s of the least MongoDB work a per-customer profile with a per-event timeline
    needs: for each batch of 500, one plain ``$inc`` upsert per customer in the batch and one
    small insert per event, nothing else (no pipeline, dedupe, encryption or Kafka).
    Measured on the same server in the same run, to show what the server itself allows."""
    client = mongo_client(mongo_uri, "bench-floor")
    db = database(client, "bench_floor", "profile")
    await db["timeline"].create_index([("customer_id", 1), ("at", -1)])
    started = time.perf_counter()
    for index in range(0, len(events), 500):
        batch = events[index : index + 500]
        customers = sorted({e.customer_id for e in batch})
        upserts = [UpdateOne({"_id": c}, {"$inc": {"events": 1}}, upsert=True) for c in customers]
        docs = [
            {"_id": e.event_id, "customer_id": e.customer_id, "name": e.name, "at": T0}
            for e in batch
        ]
        await asyncio.gather(
            db["profiles"].bulk_write(upserts, ordered=False),
            db["timeline"].insert_many(docs, ordered=False),
        )
    elapsed = time.perf_counter() - started
    client.close()
    return len(events) / elapsed


class PipelineStore(ProfileStore):
    """The profile store as before operator updates: every update a pipeline."""

    def _operators(self, merged: MergedDelta, event_ids: list[str]) -> Document | None:
        return None


async def store_ab(mongo_uri: str, events: list[events_pb2.Event], rounds: int) -> None:
    """The store's writes alone (no Kafka), side by side on the same server: per batch of
    500, the floor's writes, the store with every update a pipeline, and the store as it is,
    in turn (who goes first rotates), each side in its own database. Prints events/s per side
    and the ratios, and each side's statements per event."""
    cipher = FieldCipher({"k1": parse_key(generate_key())}, "k1", parse_key(generate_key()))
    counter = OperationCounter()
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_uri, appname="bench-ab", tz_aware=True, event_listeners=[counter]
    )
    sides = ["floor", "pipeline", "operators"]
    stores = {
        "pipeline": PipelineStore(database(client, "bench_ab_pipe", "profile"), 1_000, cipher, PII),
        "operators": ProfileStore(database(client, "bench_ab_ops", "profile"), 1_000, cipher, PII),
    }
    for store in stores.values():
        await store.ensure_indexes()
    floor_db = database(client, "bench_ab_floor", "profile")
    await floor_db["timeline"].create_index([("customer_id", 1), ("at", -1)])
    seconds = dict.fromkeys(sides, 0.0)
    statements = dict.fromkeys(sides, 0)
    resolved = [to_resolved_event(e) for e in events]
    batches = [resolved[i : i + 500] for i in range(0, len(resolved), 500)]
    for number, batch in enumerate(batches * rounds):
        for side in sides[number % 3 :] + sides[: number % 3]:
            counter.statements.clear()
            started = time.perf_counter()
            if side == "floor":
                customers = sorted({e.customer_id for e in batch})
                docs = [
                    {"_id": f"{number}-{e.event_id}", "customer_id": e.customer_id, "at": T0}
                    for e in batch
                ]
                await asyncio.gather(
                    floor_db["profiles"].bulk_write(
                        [
                            UpdateOne({"_id": c}, {"$inc": {"events": 1}}, upsert=True)
                            for c in customers
                        ],
                        ordered=False,
                    ),
                    floor_db["timeline"].insert_many(docs, ordered=False),
                )
            else:
                store = stores[side]
                # Later rounds are new events for the same customers (fresh ids).
                fresh = [replace(e, event_id=f"{number}-{e.event_id}") for e in batch]
                await asyncio.gather(store.apply([fold(e) for e in fresh]), store.record(fresh))
            seconds[side] += time.perf_counter() - started
            statements[side] += sum(counter.statements.values())
    total = len(events) * rounds
    rate = {side: total / seconds[side] for side in sides}
    emit(
        {
            "metric": "profile_store_ab_events_per_s",
            "events": total,
            **{side: round(rate[side], 1) for side in sides},
            "operators_to_pipeline": round(rate["operators"] / rate["pipeline"], 2),
            "operators_to_floor": round(rate["operators"] / rate["floor"], 2),
            "pipeline_to_floor": round(rate["pipeline"] / rate["floor"], 2),
            "statements_per_event": {side: round(statements[side] / total, 3) for side in sides},
        }
    )
    client.close()


def main() -> None:
    """Start private servers, measure, stop them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=3_000, help="events/s offered")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout", type=float, default=1_800)
    parser.add_argument(
        "--mongo-mode",
        type=mongo_modes,
        default=["standalone"],
        help="replset, standalone, or both comma-separated (run in turn, side by side)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times every mode runs")
    parser.add_argument(
        "--no-retry-writes",
        action="store_true",
        help="connect with retryWrites=false (the local server's cost of retryable writes)",
    )
    parser.add_argument("--cprofile", help="write a cProfile of the consumer run to this file")
    parser.add_argument(
        "--store-ab",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also compare the store's writes side by side (floor, pipeline, operators)",
    )
    parser.add_argument("--skip-consumer", action="store_true", help="only the store A/B")
    args = parser.parse_args()
    each_mode(args.mongo_mode, args.rounds, RUN, lambda mode: measure(args, mode))


def measure(args: argparse.Namespace, mode: str) -> None:
    """One run on fresh private servers, the MongoDB-wire server run as ``mode``."""
    with private_servers(mode) as (mongo, kafka):
        mongo_uri = mongo.uri + ("&retryWrites=false" if args.no_retry_writes else "")
        if args.store_ab:
            sample = workload(min(args.events, 30_000), args.customers, args.seed + 2)
            asyncio.run(store_ab(mongo_uri, sample, args.store_ab))
        if args.skip_consumer:
            return
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler is not None:
            profiler.enable()
        folded = asyncio.run(run(args, mongo_uri, kafka.bootstrap_servers))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
        sample = workload(min(args.events, 30_000), args.customers, args.seed + 1)
        floor = asyncio.run(store_floor(mongo_uri, sample))
        emit(
            {
                "metric": "profile_store_floor_events_per_s",
                "value": round(floor, 1),
                "events": len(sample),
                "note": "one $inc upsert per customer + one insert per event per batch "
                "of 500, same server, same run",
                "fold_to_floor": round(folded / floor, 2),
            }
        )


if __name__ == "__main__":
    main()
