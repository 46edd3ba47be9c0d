"""Soak run (``make soak``, not in CI): the whole local stack under a steady load for a long
time, to see what grows.

A private stack on free ports; ``--customers`` customers identified first; then for
``--seconds`` (600 by default): track events offered open loop at ``--rate`` events/s (300)
through ``/v1/batch`` in batches of 10, ``--queries`` GraphQL customer reads per second (20)
of random known customers, and one identify per second timed until its trait is visible
through GraphQL (freshness). Every ``--every-s`` seconds it reads each process's resident
memory (``VmRSS`` from ``/proc/<pid>/status``) and every consumer group's backlog (messages
produced to its topics and not yet handled, from the processes' ``/metrics``).

Prints JSON lines with the core count: the timeline (one line per read), then each process's
RSS at start and end, the freshness and GraphQL latency percentiles, and what was sent.
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
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.local.stack import Stack, StackPorts
from tests.perf.costs import stack_pids
from tests.perf.pacing import (
    Plan,
    Sampler,
    backlog,
    bus_counts,
    sample_identifies,
    send_paced,
    summary_ms,
)
from tests.support.platform import CUSTOMER_QUERY, UNLIMITED_INGEST, Platform

SOAK_EVENT = "Soak Viewed"
# GraphQL reads in flight at most; one due beyond that is skipped and counted.
MAX_QUERIES_IN_FLIGHT = 50


def emit(record: dict[str, object]) -> None:
    """One JSON line with the core count."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def identify_all(platform: Platform, customers: int) -> None:
    """Make the run's customers known (identify in batches)."""
    calls = [
        {"type": "identify", "userId": f"bench-{n}", "traits": {"soak": True}}
        for n in range(customers)
    ]
    for start in range(0, len(calls), 100):
        response = await platform.send("/v1/batch", {"batch": calls[start : start + 100]})
        response.raise_for_status()


async def query_load(
    platform: Platform, per_s: float, seconds: float, customers: int
) -> dict[str, Any]:
    """GraphQL customer reads of random known customers on the clock (open loop)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    tasks: set[asyncio.Task[None]] = set()
    skipped = 0

    async def one() -> None:
        started = time.perf_counter()
        variables = {"type": "user_id", "value": f"bench-{random.randrange(customers)}"}
        try:
            response = await platform.graphql(CUSTOMER_QUERY, variables)
            body = response.json() if response.status_code == 200 else {}
            if response.status_code != 200:
                errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
            elif "errors" in body:
                code = str(body["errors"][0].get("extensions", {}).get("code", "error"))
                errors[code] = errors.get(code, 0) + 1
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    for n in range(int(per_s * seconds)):
        delay = started + n / per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= MAX_QUERIES_IN_FLIGHT:
            # The stack is behind: a query not sent is counted, not queued without bound.
            skipped += 1
            continue
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return {
        "queries": len(latencies),
        "skipped_at_max_in_flight": skipped,
        "errors": errors,
        **summary_ms(latencies),
    }


async def timeline(
    stack: Stack, http: httpx.AsyncClient, every_s: float, stop: asyncio.Event
) -> dict[str, list[int | None]]:
    """Every ``every_s``: each process's RSS and each group's backlog, printed as a line;
    returns each process's RSS readings."""
    pids = stack_pids(stack)
    readings: dict[str, list[int | None]] = {name: [] for name in pids}
    started = time.perf_counter()
    while True:
        rss = {name: rss_kib(pid) for name, pid in stack_pids(stack).items()}
        for name, value in rss.items():
            readings.setdefault(name, []).append(value)
        lag: dict[str, float] = {}
        try:
            for (_, group), behind in backlog(await bus_counts(stack, http)).items():
                lag[group] = lag.get(group, 0.0) + behind
        except httpx.HTTPError:
            lag = {}
        emit(
            {
                "metric": "soak_timeline",
                "at_s": round(time.perf_counter() - started, 1),
                "rss_kib": rss,
                "backlog": {group: int(n) for group, n in sorted(lag.items())},
            }
        )
        try:
            await asyncio.wait_for(stop.wait(), every_s)
            return readings
        except TimeoutError:
            continue


async def run(args: argparse.Namespace, stack: Stack) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(timeout=60, limits=limits) as client,
        httpx.AsyncClient(timeout=30, limits=limits) as probes,
        httpx.AsyncClient(timeout=10) as watcher,
    ):
        platform, probing = Platform(stack, client), Platform(stack, probes)
        await identify_all(platform, args.customers)
        plan = Plan(
            args.rate, args.seconds, 10, args.customers, samples_per_s=1.0, event=SOAK_EVENT
        )
        sampler = Sampler(max_in_flight=3, poll_s=0.01)
        stop = asyncio.Event()
        # Its own connections: the timeline's reads never queue behind the load.
        watching = asyncio.create_task(timeline(stack, watcher, args.every_s, stop))
        sent, queried, _ = await asyncio.gather(
            send_paced(platform, plan, 16, lambda sample, accepted: None),
            query_load(probing, args.queries, args.seconds, args.customers),
            sample_identifies(probing, sampler, 1.0, args.seconds),
        )
        await sampler.drain()
        stop.set()
        readings = await watching
    for name, values in sorted(readings.items()):
        known = [v for v in values if v is not None]
        if known:
            emit(
                {
                    "metric": "soak_rss_kib",
                    "process": name,
                    "start": known[0],
                    "end": known[-1],
                    "max": max(known),
                    "growth": round(known[-1] / known[0], 3) if known[0] else None,
                }
            )
    emit(
        {
            "metric": "soak_freshness_ms",
            **summary_ms(sampler.latencies),
            **sampler.counts(),
            "load": f"steady {args.rate}/s events, {args.queries}/s queries",
        }
    )
    emit({"metric": "soak_graphql_ms", **queried})
    emit(
        {
            "metric": "soak_sent",
            "offered": plan.total,
            "accepted": sent.accepted,
            "failed": sent.failed,
            "late_batches": sent.late,
            "seconds": args.seconds,
        }
    )


def main() -> None:
    """Start a private stack, soak it, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=300.0, help="track events per second")
    parser.add_argument("--queries", type=float, default=20.0, help="GraphQL reads per second")
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--every-s", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lodestar-soak-") as logs:
        stack = Stack(
            StackPorts.free(),
            Path(logs),
            extra_env=dict(UNLIMITED_INGEST),
        )
        stack.start()
        try:
            asyncio.run(run(args, stack))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
