"""Identity benchmark (``make bench``): resolve throughput on the consumer path, batched,
against a local SecantusDB and Tansu started on free ports.

100,000 events over 20,000 people: every person browses anonymously first; 30% use two
devices before they identify, and their login on the second device merges the two anonymous
customers. People's events interleave in time. Prints JSON lines with the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lodestar.v1 import common_pb2, events_pb2
from services.identity.consumers import RawEventHandler
from services.identity.resolution import Resolver
from services.identity.rules import IdentityRules
from services.identity.store import IdentityStore
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, Pending, ensure_topics
from services.platform.crypto import FieldCipher, generate_key, parse_key
from services.platform.mongo import database, mongo_client
from tests.perf.servers import each_mode, mongo_modes, private_servers

T0 = datetime(2026, 11, 1, tzinfo=UTC)


# The MongoDB mode of the run in progress, on every line (set by main()).
RUN: dict[str, object] = {}


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count and the run's MongoDB mode on every line."""
    print(json.dumps({"cores": os.cpu_count(), **RUN, **record}), flush=True)


def person_events(n: int, rng: random.Random) -> list[tuple[float, list[tuple[str, str]]]]:
    """Five events of person ``n``: (minute, identifiers)."""
    user, email = f"user-{n}", f"person{n}@example.com"
    d1, d2 = f"anon-{n}-a", f"anon-{n}-b"
    start = rng.uniform(0, 7 * 24 * 60)
    steps = sorted(rng.uniform(0, 180) for _ in range(5))
    if rng.random() < 0.3:
        shape = [
            [("anonymous_id", d1)],
            [("anonymous_id", d2)],
            [("user_id", user), ("email", email), ("anonymous_id", d1)],
            [("user_id", user), ("anonymous_id", d2)],  # login on the second device: merge
            [("user_id", user), ("anonymous_id", d1)],
        ]
    else:
        shape = [
            [("anonymous_id", d1)],
            [("anonymous_id", d1)],
            [("user_id", user), ("email", email), ("anonymous_id", d1)],
            [("user_id", user), ("anonymous_id", d1)],
            [("user_id", user), ("anonymous_id", d1)],
        ]
    return [(start + step, ids) for step, ids in zip(steps, shape, strict=True)]


def workload(people: int, seed: int) -> list[events_pb2.Event]:
    """Every person's events, interleaved by time."""
    rng = random.Random(seed)
    timed = [e for n in range(people) for e in person_events(n, rng)]
    timed.sort(key=lambda e: e[0])
    events = []
    for index, (minute, identifiers) in enumerate(timed):
        event = events_pb2.Event(
            event_id=f"bench-{index}",
            type=events_pb2.EVENT_TYPE_TRACK,
            name="Page Viewed",
            identifiers=[common_pb2.Identifier(type=t, value=v) for t, v in identifiers],
            source="bench",
        )
        event.received_at.FromDatetime(T0 + timedelta(minutes=minute))
        events.append(event)
    return events


def kafka_key(event: events_pb2.Event) -> str:
    """What the gateway keys raw events by: the user id, else the anonymous id."""
    by_type = {i.type: i.value for i in event.identifiers}
    return by_type.get("user_id") or by_type["anonymous_id"]


async def run(args: argparse.Namespace, mongo_uri: str, bootstrap: str) -> None:
    events = workload(args.people, args.seed)
    await ensure_topics(
        bootstrap,
        dict.fromkeys([topics.EVENTS_RAW, topics.EVENTS_RESOLVED, topics.IDENTITY_MERGED], 6),
    )
    config = BusConfig(bootstrap, "bench-identity", session_timeout_ms=2000, max_batch=args.batch)
    bus = Bus(config)
    await bus.start()
    for start in range(0, len(events), 5_000):
        chunk = events[start : start + 5_000]
        await bus.publish_many([(topics.EVENTS_RAW, kafka_key(e), e) for e in chunk])

    client = mongo_client(mongo_uri, "bench")
    rules = IdentityRules.build()
    cipher = FieldCipher({"k1": parse_key(generate_key())}, "k1", parse_key(generate_key()))
    store = IdentityStore(database(client, "bench", "identity"), cipher, rules)
    await store.ensure_indexes()
    resolver = Resolver(store, rules)
    handler = RawEventHandler(resolver, bus)
    latencies: list[float] = []
    handled = 0
    done = asyncio.Event()
    first_batch: list[float] = []

    async def timed(batch: Sequence[Delivery[events_pb2.Event]]) -> Pending:
        nonlocal handled
        started = time.perf_counter()
        if not first_batch:
            first_batch.append(started)
        pending = await handler(batch)
        latencies.append(time.perf_counter() - started)
        handled += len(batch)
        if handled >= len(events):
            done.set()
        return pending

    # Replicas of the consumer in one group split the partitions, as identity pods would;
    # the graph's optimistic concurrency keeps them correct.
    subscriptions = [
        bus.subscribe([topics.EVENTS_RAW], "bench-identity", events_pb2.Event, timed)
        for _ in range(args.replicas)
    ]
    for subscription in subscriptions:
        await subscription.start()
    tasks = [asyncio.create_task(s.run()) for s in subscriptions]
    await asyncio.wait_for(done.wait(), timeout=args.timeout)
    # The service flushes buffered last-seen times every few seconds: count that work too.
    await resolver.flush_last_seen()
    elapsed = time.perf_counter() - first_batch[0]
    for subscription in subscriptions:
        await subscription.stop()
    await asyncio.gather(*tasks)
    merges = await store.merges.count_documents({})
    customers = await store.customers.count_documents({"status": "active"})
    conflicts = await store.conflicts.count_documents({})
    emit(
        {
            "metric": "identity_resolve_events_per_s",
            "value": round(handled / elapsed, 1),
            "events": handled,
            "people": args.people,
            "seconds": round(elapsed, 2),
            "target": 3000,
        }
    )
    emit(
        {
            "metric": "identity_graph",
            "merges": merges,
            "active_customers": customers,
            "conflicts": conflicts,
        }
    )
    ordered = sorted(latencies)
    emit(
        {
            "metric": "identity_batch_latency_ms",
            "batch_size": args.batch,
            "batches": len(ordered),
            "p50": round(statistics.median(ordered) * 1000, 1),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
            "note": "every event of a batch waits for the whole batch",
        }
    )
    await bus.stop()
    client.close()


async def store_floor(mongo_uri: str, batches: int) -> float:
    """Events/s of the least MongoDB work any identifier-per-document graph needs per batch
    of 500: read the owners of ~800 keys and insert ~330 new identifiers (the workload's
    averages), nothing else: no customers, merges, checks or Kafka. Measured on the same
    server in the same run, to show how close the service gets to what the server allows."""
    client = mongo_client(mongo_uri, "bench-floor")
    identifiers = database(client, "bench_floor", "identity")["identifiers"]
    await identifiers.create_index("customer_id")
    known: list[str] = []
    started = time.perf_counter()
    for _ in range(batches):
        keys = [f"anonymous_id:{uuid.uuid4().hex}" for _ in range(400)] + known[-400:]
        await asyncio.gather(
            *(
                identifiers.find({"_id": {"$in": keys[i : i + 50]}}, {"customer_id": 1}).to_list(
                    None
                )
                for i in range(0, len(keys), 50)
            )
        )
        docs = [
            {
                "_id": f"email:{uuid.uuid4().hex}",
                "customer_id": str(uuid.uuid4()),
                "type": "email",
                "enc": {"kid": "k1", "n": os.urandom(12), "ct": os.urandom(40)},
                "first_seen": T0,
                "last_seen": T0,
                "source": "bench",
            }
            for _ in range(330)
        ]
        await identifiers.insert_many(docs, ordered=False)
        known += [str(d["_id"]) for d in docs]
    elapsed = time.perf_counter() - started
    client.close()
    return batches * 500 / elapsed


def main() -> None:
    """Start private servers, measure, stop them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--replicas", type=int, default=1, help="consumers in the group")
    parser.add_argument("--timeout", type=float, default=1_800)
    parser.add_argument(
        "--mongo-mode",
        type=mongo_modes,
        default=["standalone"],
        help="replset, standalone, or both comma-separated (run in turn, side by side)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times every mode runs")
    args = parser.parse_args()
    each_mode(args.mongo_mode, args.rounds, RUN, lambda mode: measure(args, mode))


def measure(args: argparse.Namespace, mode: str) -> None:
    """One run on fresh private servers, the MongoDB-wire server run as ``mode``."""
    with private_servers(mode) as (mongo, kafka):
        asyncio.run(run(args, mongo.uri, kafka.bootstrap_servers))
        floor = asyncio.run(store_floor(mongo.uri, batches=100))
        emit(
            {
                "metric": "identity_store_floor_events_per_s",
                "value": round(floor, 1),
                "note": "owner reads + identifier inserts only, same server, same run",
            }
        )


if __name__ == "__main__":
    main()
