"""Ingest benchmark (``make bench``): 20,000 track events over ``/v1/batch`` against the local
stack, on free ports. Prints JSON lines: the machine's cores, events accepted per second at
the gateway, end-to-end events per second until every profile reflects them, and p50/p99
freshness (accepted -> visible through GraphQL) on a sample.

Then the cost table of the run, over the window from just before the first event is sent to
the last bus activity seen once every consumer has gone quiet (no message handled and no batch
committed for ``--quiet-s``): each process's CPU milliseconds per 1,000 events from
``/proc/<pid>/stat`` (the gateway, each service, the stand-ins, Tansu and each MongoDB-wire
server), and per process that talks to the database the operations and documents per event,
in total and by command and collection (from the ``lodestar_db_*`` counters on its
``/metrics``); one JSON line per process, one per service, and a ``cost_table`` line with all
of it. The wait for the profiles counts them in the store every 0.25 s: what those counts
cost the database servers is measured after the window and printed on its own line.

Then the idle freshness line (identify -> trait visible through GraphQL, one sample at a
time, after the bulk run), and on the same stack a paced phase: track events for the same
customers at ``--offered-rate`` (default 500 events/s) for ``--offered-seconds`` (default
20), in batches of ``--offered-batch-size`` (10: one every 20 ms at 500/s) sent open loop:
each batch is queued at its due time whether or not earlier requests have returned and goes
out over ``--send-connections``; one that went out more than one interval late is counted.
Meanwhile freshness is sampled ``--sample-rate`` times a second per probe (at most
``--samples-in-flight`` at once; polls every ``--sample-poll-ms``, or 5% of the wait so far
when longer): identify -> trait visible through GraphQL (as on the idle stack), and a timed
track event's accepted -> the profile's count reflecting it (read from the profile store by
customer id, which costs the stack less than GraphQL). Printed, with "load": "steady
<rate>/s offered": both freshness lines (p50/p95/p99/max, samples, offered and achieved
rate), the sender's line (late batches, request latencies, failures, CPU cores used by the
stack, this benchmark and the whole machine, how long after the last send every paced event
was counted), one ``bus_group`` line per consumer group (messages and batches handled, mean
batch size and time, backlog at the start, at most and at the end: the hop that falls
behind), the stack's warnings, and the cost rows over the phase. Several rates
(comma-separated) run in turn on the same stack, each counting its own event name;
``--offered-rate 0`` skips the phase. ``--fetch-max-wait-ms`` sets
``LODESTAR_KAFKA_FETCH_MAX_WAIT_MS`` for the stack; several values alternate, a fresh stack
each.

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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
from motor.motor_asyncio import AsyncIOMotorClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.local.stack import Stack, StackPorts
from services.platform.mongo import Document
from tests.perf.costs import CLOCK_TICKS, Snapshot, cost_rows, cpu_ticks, snapshot, stack_pids
from tests.perf.pacing import (
    PACED_EVENT,
    BusWatch,
    LogWatch,
    Plan,
    Sampler,
    TrackProbe,
    machine_ticks,
    percentile,
    resolve_customers,
    sample_identifies,
    send_paced,
    summary_ms,
)
from tests.perf.servers import each_mode
from tests.support.platform import UNLIMITED_INGEST, Platform

EVENT = "Bench Viewed"
N = TypeVar("N", int, float)
# How often the stack's counters are read while waiting for the consumers to go quiet.
POLL_S = 0.5
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


async def wait_reflected(mongo_uri: str, customers: int, per_customer: int) -> int:
    """Until every bench customer's profile counts all its events (read from the store:
    polling 1,000 customers through GraphQL would load the machine being measured); returns
    how many times it counted."""
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(mongo_uri)
    profiles = client["lodestar_profile"]["profiles"]
    polls = 0
    try:
        while True:
            polls += 1
            done = await profiles.count_documents({f"event_counts.{EVENT}": per_customer})
            if done >= customers:
                return polls
            await asyncio.sleep(0.25)
    finally:
        client.close()


async def poll_cost_ms(stack: Stack, per_customer: int, polls: int = 10) -> float:
    """The database servers' CPU milliseconds for one of ``wait_reflected``'s counts, measured
    on the quiet stack: the benchmark's own load on them, to read their row net of it."""
    servers = [pid for name, pid in stack_pids(stack).items() if name.startswith("mongodb")]
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongo_uri_for("profile"))
    profiles = client["lodestar_profile"]["profiles"]
    try:
        before = sum(cpu_ticks(pid) for pid in servers)
        for _ in range(polls):
            await profiles.count_documents({f"event_counts.{EVENT}": per_customer})
        spent = sum(cpu_ticks(pid) for pid in servers) - before
    finally:
        client.close()
    return spent * 1000 / CLOCK_TICKS / polls


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


async def until_quiet(
    stack: Stack, http: httpx.AsyncClient, quiet_s: float, timeout_s: float
) -> tuple[Snapshot, bool]:
    """The stack's counters when the bus was last seen active, once no message was handled
    and no batch committed for ``quiet_s`` after it (every consumer caught up), or at
    ``timeout_s``; whether it went quiet."""
    deadline = time.perf_counter() + timeout_s
    mark = await snapshot(stack, http)
    while time.perf_counter() < deadline:
        await asyncio.sleep(POLL_S)
        current = await snapshot(stack, http)
        if not current.bus_quiet_since(mark):
            mark = current
        elif current.at - mark.at >= quiet_s:
            return mark, True
    return mark, False


async def run(args: argparse.Namespace, stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        platform = Platform(stack, client)
        before = await snapshot(stack, client)
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
        per_customer = args.events // args.customers
        polls = await wait_reflected(stack.mongo_uri_for("profile"), args.customers, per_customer)
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
        after, quiet = await until_quiet(stack, client, args.quiet_s, args.quiet_timeout_s)
        for row in cost_rows(before, after, args.events, after.at - before.at):
            emit({**row, "window": "first event sent -> last bus activity", "quiet": quiet})
        per_poll_ms = await poll_cost_ms(stack, per_customer)
        emit(
            {
                "metric": "benchmark_polls_in_mongodb_cpu",
                "polls": polls,
                "cpu_ms_per_poll": round(per_poll_ms, 1),
                "cpu_ms_per_1000_events": round(polls * per_poll_ms / args.events * 1000, 1),
                "note": "the end-to-end wait's own counts, included in the mongodb row above",
            }
        )
        sample = await freshness(platform, args.samples)
        emit(
            {
                "metric": "freshness_ms",
                "p50": round(percentile(sample, 50) * 1000, 1),
                "p99": round(percentile(sample, 99) * 1000, 1),
                "mean": round(statistics.fmean(sample) * 1000, 1),
                "p95": round(percentile(sample, 95) * 1000, 1),
                "max": round(max(sample) * 1000, 1),
                "samples": len(sample),
                "load": "idle after the bulk run",
            }
        )
        for phase, rate in enumerate(args.offered_rate, 1):
            if rate > 0:
                await paced(args, phase, rate, stack, platform, client)


async def paced(
    args: argparse.Namespace,
    phase: int,
    rate: float,
    stack: Stack,
    platform: Platform,
    http: httpx.AsyncClient,
) -> None:
    """Paced phase number ``phase`` on this stack: ``rate`` events/s offered on the clock,
    freshness sampled meanwhile, the cost rows over the phase, each consumer group's work
    and backlog, and the stack's warnings."""
    plan = Plan(
        rate,
        args.offered_seconds,
        args.offered_batch_size,
        args.customers,
        args.sample_rate,
        # Each phase counts its own event name: several may run on one stack.
        f"{PACED_EVENT} {phase}",
    )
    load = f"steady {rate:g}/s offered"
    user_ids = {sample.user_id for sample in plan.track_samples().values()}
    probe = TrackProbe(stack.mongo_uri_for("profile"), await resolve_customers(platform, user_ids))
    poll_s = args.sample_poll_ms / 1000
    identifies = Sampler(args.samples_in_flight, poll_s)
    tracks = Sampler(args.samples_in_flight, poll_s)
    watch = BusWatch(stack, http)
    # Each its own pool: the sender's connections all kept alive, and no poll queued behind
    # a send (a queue in the client's pool costs it CPU per waiting request).
    sending = httpx.AsyncClient(
        timeout=60,
        limits=httpx.Limits(
            max_connections=args.send_connections, max_keepalive_connections=args.send_connections
        ),
    )
    sampling_http = httpx.AsyncClient(timeout=60)
    try:
        logs = LogWatch(stack.log_dir)
        watching = asyncio.create_task(watch.run())
        before = await snapshot(stack, http)
        own_before, machine_before = os.times(), machine_ticks()
        sampling = asyncio.create_task(
            sample_identifies(
                Platform(stack, sampling_http), identifies, args.sample_rate, args.offered_seconds
            )
        )
        report = await send_paced(
            Platform(stack, sending),
            plan,
            args.send_connections,
            lambda sample, at: probe.sample(tracks, plan, sample, at),
        )
        await sampling
        after = await snapshot(stack, http)
        own, machine = os.times(), machine_ticks()
        watch.stop()
        await watching
        await identifies.drain()
        await tracks.drain()
        drained_s = None
        # Refused batches would never be counted: no wait then (the line says how many).
        if report.accepted == plan.total:
            waited_from = time.perf_counter()
            drained = await probe.wait_all(plan, args.quiet_timeout_s)
            if drained is not None:
                drained_s = drained + waited_from - report.last_done
    finally:
        probe.close()
        await sending.aclose()
        await sampling_http.aclose()
    window_s = max(report.last_done - report.first_due, 1e-9)
    achieved = round(report.accepted / window_s, 1)
    common = {"offered_events_per_s": rate, "achieved_events_per_s": achieved}
    for name, sampler, probe_text in (
        ("freshness_ms", identifies, "identify -> trait visible through GraphQL"),
        ("track_freshness_ms", tracks, "track accepted -> profile event count (store)"),
    ):
        emit(
            {
                "metric": name,
                **summary_ms(sampler.latencies),
                **sampler.counts(),
                **common,
                "probe": probe_text,
                "poll_ms": args.sample_poll_ms,
                "load": load,
            }
        )
    own_cpu_s = own.user + own.system - own_before.user - own_before.system
    stack_cpu_s = sum(after.ticks[k] - before.ticks.get(k, 0) for k in after.ticks) / CLOCK_TICKS
    machine_busy_s = (machine[0] - machine_before[0]) / CLOCK_TICKS
    # Whatever the machine ran besides the stack and this benchmark (others' work shares it).
    cores = {
        "stack": round(stack_cpu_s / (after.at - before.at), 2),
        "benchmark": round(own_cpu_s / (after.at - before.at), 2),
        "machine_busy": round(machine_busy_s / (after.at - before.at), 2),
    }
    emit(
        {
            "metric": "paced_send",
            **common,
            "events_offered": plan.total,
            "events_accepted": report.accepted,
            "batch_size": plan.batch_size,
            "interval_ms": round(plan.interval * 1000, 1),
            "batches": len(report.lags),
            "late_batches": report.late,
            "send_lag_ms": summary_ms(report.lags),
            "request_ms": summary_ms(report.latencies),
            "connections": args.send_connections,
            "max_batches_waiting": report.max_waiting,
            "failed_requests": report.failed,
            "seconds": round(window_s, 2),
            "benchmark_cpu_s": round(own_cpu_s, 2),
            "cores_used": cores,
            "all_counted_s_after_last_send": None if drained_s is None else round(drained_s, 2),
            "load": load,
        }
    )
    emit({"metric": "log_warnings", "by_process": logs.counts(), "phase": load})
    for row in watch.rows():
        emit({**row, "phase": load})
    if not report.accepted:
        return
    for row in cost_rows(before, after, report.accepted, after.at - before.at):
        emit({**row, "phase": load, "window": "paced phase: first batch due -> last response"})


def main() -> None:
    """Start a private stack on free ports, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--quiet-s", type=float, default=3.0)
    parser.add_argument("--quiet-timeout-s", type=float, default=120.0)
    parser.add_argument(
        "--mongo-mode",
        default="standalone",
        help=f"one or several (comma-separated, run in turn) of {', '.join(MONGO_MODES)}",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times every mode runs")
    parser.add_argument(
        "--offered-rate",
        type=numbers(float),
        default=[500.0],
        help="events/s of the paced phase; several (comma-separated) run in turn on the same "
        "stack; 0 skips it",
    )
    parser.add_argument("--offered-seconds", type=float, default=20.0)
    parser.add_argument("--offered-batch-size", type=int, default=10)
    parser.add_argument(
        "--sample-rate", type=float, default=5.0, help="freshness samples per second, each probe"
    )
    parser.add_argument("--sample-poll-ms", type=float, default=10.0)
    parser.add_argument("--samples-in-flight", type=int, default=3, help="per probe, at most")
    parser.add_argument(
        "--send-connections",
        type=int,
        default=16,
        help="connections the paced sender posts over (batches due while all are busy wait)",
    )
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=numbers(int),
        default=None,
        help="LODESTAR_KAFKA_FETCH_MAX_WAIT_MS for the stack (default: the stack's own); "
        "several (comma-separated) alternate, a fresh stack each, within every mode and round",
    )
    args = parser.parse_args()
    if args.events % args.customers:
        parser.error("--events must be a multiple of --customers")
    if min(args.offered_rate) < 0 or args.offered_seconds <= 0 or args.offered_batch_size < 1:
        parser.error("--offered-rate >= 0, --offered-seconds > 0, --offered-batch-size >= 1")
    if args.sample_rate <= 0 or args.sample_poll_ms <= 0 or args.samples_in_flight < 1:
        parser.error("--sample-rate > 0, --sample-poll-ms > 0, --samples-in-flight >= 1")
    if args.send_connections < 1:
        parser.error("--send-connections >= 1")
    modes = [m.strip() for m in args.mongo_mode.split(",") if m.strip()]
    if not modes or any(m not in MONGO_MODES for m in modes):
        parser.error(f"--mongo-mode: each must be one of {', '.join(MONGO_MODES)}")
    each_mode(modes, args.rounds, RUN, lambda mode: each_wait(args, mode))


def numbers(kind: Callable[[str], N]) -> Callable[[str], list[N]]:
    """An option's parser for one number or several, comma-separated."""

    def parse(text: str) -> list[N]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(
                f"not a comma-separated list of numbers: {text[:40]!r}"
            )
        return values

    return parse


def each_wait(args: argparse.Namespace, mode: str) -> None:
    """One stack per ``--fetch-max-wait-ms`` value in turn (one with the stack's own default
    when none is given), the value on every line."""
    for wait in args.fetch_max_wait_ms or [None]:
        if wait is not None:
            RUN["fetch_max_wait_ms"] = wait
        run_stack(args, mode, wait)


def run_stack(args: argparse.Namespace, mode: str, fetch_max_wait_ms: int | None) -> None:
    """One fresh stack with its MongoDB-wire server(s) run as ``mode``, measured, stopped."""
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-") as logs:
        unlimited = dict(UNLIMITED_INGEST)
        if fetch_max_wait_ms is not None:
            unlimited["LODESTAR_KAFKA_FETCH_MAX_WAIT_MS"] = str(fetch_max_wait_ms)
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
