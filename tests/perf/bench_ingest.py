"""Ingest benchmark (``make bench``): 20,000 track events over ``/v1/batch`` against the local
stack, on free ports. Prints JSON lines: the machine's cores, events accepted per second at
the gateway, end-to-end events per second until every profile reflects them, and p50/p99
freshness (accepted -> visible through GraphQL) on a sample.

``--mongo-mode`` compares how the local MongoDB-wire server is run, side by side in one
invocation (a fresh stack per run, modes alternating over ``--rounds``): ``replset`` (the
server advertised as a replica set, so drivers send retryable writes), ``standalone`` (one
server, the default) and ``per-service`` (one standalone server per database owner).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from motor.motor_asyncio import AsyncIOMotorClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.local.stack import Stack, StackPorts
from services.platform.mongo import Document
from tests.support.platform import Platform

EVENT = "Bench Viewed"
MONGO_MODES = ("replset", "standalone", "per-service")
# The mode of the run in progress, on every line (set by main()).
RUN: dict[str, object] = {}


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count and the run's MongoDB mode on every line."""
    print(json.dumps({"cores": os.cpu_count(), **RUN, **record}), flush=True)


async def send_all(
    platform: Platform, events: int, customers: int, batch_size: int, concurrency: int
) -> float:
    """POST every event in batches with ``concurrency`` requests in flight; returns seconds."""
    calls: list[dict[str, object]] = [
        {
            "type": "track",
            "userId": f"bench-{n % customers}",
            "event": EVENT,
            "messageId": f"bench-{n}",
            "properties": {"n": n, "sku": f"sku-{n % 97}"},
        }
        for n in range(events)
    ]
    batches = [calls[i : i + batch_size] for i in range(0, len(calls), batch_size)]
    queue: asyncio.Queue[list[dict[str, object]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            response = await platform.send("/v1/batch", {"batch": batch})
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def wait_reflected(mongo_uri: str, customers: int, per_customer: int) -> None:
    """Until every bench customer's profile counts all its events (read from the store:
    polling 1,000 customers through GraphQL would load the machine being measured)."""
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(mongo_uri)
    profiles = client["lodestar_profile"]["profiles"]
    try:
        while True:
            done = await profiles.count_documents({f"event_counts.{EVENT}": per_customer})
            if done >= customers:
                return
            await asyncio.sleep(0.25)
    finally:
        client.close()


async def freshness(platform: Platform, samples: int) -> list[float]:
    """Seconds from 200 OK on identify to the trait being visible through GraphQL."""
    latencies = []
    for n in range(samples):
        user_id = f"fresh-{n}-{time.time_ns()}"
        response = await platform.send("/v1/identify", {"userId": user_id, "traits": {"n": n}})
        response.raise_for_status()
        accepted = time.perf_counter()
        while True:
            customer = await platform.customer("user_id", user_id)
            if customer and customer["traits"].get("n") == n:
                break
            await asyncio.sleep(0.005)
        latencies.append(time.perf_counter() - accepted)
    return latencies


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def run(args: argparse.Namespace, stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        platform = Platform(stack, client)
        started = time.perf_counter()
        send_s = await send_all(
            platform, args.events, args.customers, args.batch_size, args.concurrency
        )
        emit(
            {
                "metric": "ingest_accepted_events_per_s",
                "value": round(args.events / send_s, 1),
                "events": args.events,
                "batch_size": args.batch_size,
                "concurrency": args.concurrency,
                "seconds": round(send_s, 2),
            }
        )
        await wait_reflected(
            stack.mongo_uri_for("profile"), args.customers, args.events // args.customers
        )
        e2e_s = time.perf_counter() - started
        emit(
            {
                "metric": "end_to_end_events_per_s",
                "value": round(args.events / e2e_s, 1),
                "events": args.events,
                "customers": args.customers,
                "seconds": round(e2e_s, 2),
            }
        )
        sample = await freshness(platform, args.samples)
        emit(
            {
                "metric": "freshness_ms",
                "p50": round(percentile(sample, 50) * 1000, 1),
                "p99": round(percentile(sample, 99) * 1000, 1),
                "mean": round(statistics.fmean(sample) * 1000, 1),
                "samples": len(sample),
                "load": "idle after the bulk run",
            }
        )


def main() -> None:
    """Start a private stack on free ports, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument(
        "--mongo-mode",
        default="standalone",
        help=f"one or several (comma-separated, run in turn) of {', '.join(MONGO_MODES)}",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times every mode runs")
    args = parser.parse_args()
    if args.events % args.customers:
        parser.error("--events must be a multiple of --customers")
    modes = [m.strip() for m in args.mongo_mode.split(",") if m.strip()]
    if not modes or any(m not in MONGO_MODES for m in modes):
        parser.error(f"--mongo-mode: each must be one of {', '.join(MONGO_MODES)}")
    for round_ in range(1, args.rounds + 1):
        for mode in modes:
            RUN.update({"mongo_mode": mode, "round": round_})
            run_stack(args, mode)


def run_stack(args: argparse.Namespace, mode: str) -> None:
    """One fresh stack with its MongoDB-wire server(s) run as ``mode``, measured, stopped."""
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-") as logs:
        # The benchmark offers more than the default per-key rate limit on purpose.
        unlimited = {
            "LODESTAR_INGEST_RATE_LIMIT_PER_S": "1000000",
            "LODESTAR_INGEST_RATE_LIMIT_BURST": "1000000",
        }
        stack = Stack(
            StackPorts.free(),
            Path(logs),
            extra_env=unlimited,
            mongo_mode="per-service" if mode == "per-service" else "shared",
            mongo_standalone=mode != "replset",
        )
        stack.start()
        try:
            asyncio.run(run(args, stack))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
