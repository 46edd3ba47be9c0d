"""The paced phase of the end-to-end benchmark: track events offered at a steady rate on the
clock (open loop: each batch is sent when it is due, whether or not earlier requests have
returned), freshness sampled meanwhile, and what every consumer group did in the window."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client.parser import text_string_to_metric_families

from infra.local.stack import Stack
from services.platform.mongo import Document
from tests.perf.costs import metrics_endpoints
from tests.support.platform import CUSTOMER_QUERY, Platform

# Each paced phase counts its own event name (several phases may run on one stack).
PACED_EVENT = "Bench Paced"
# A sample not visible by then is counted as timed out (and left out of the percentiles).
SAMPLE_TIMEOUT_S = 30.0
# A sample waiting longer than poll_s / POLL_SHARE is polled at this share of its wait.
POLL_SHARE = 0.05
LOUD = ("WARNING", "ERROR", "CRITICAL")
# How often the consumer groups' counters are read during the phase (lag is seen at this grain).
BUS_SCRAPE_S = 1.0

Call = dict[str, object]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean of seconds, in milliseconds (None when there is no value)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    return {
        "p50": round(percentile(values, 50) * 1000, 1),
        "p95": round(percentile(values, 95) * 1000, 1),
        "p99": round(percentile(values, 99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
        "mean": round(sum(values) / len(values) * 1000, 1),
    }


@dataclass(frozen=True)
class TrackSample:
    """A paced track event whose arrival in the profile is timed: the customer's count of
    ``PACED_EVENT`` reaches ``count`` once it (and the customer's earlier ones) is folded."""

    user_id: str
    count: int


@dataclass(frozen=True)
class Plan:
    """``rate`` events/s for ``seconds`` in batches of ``batch_size``, round-robin over the
    bulk run's customers; one track event in every ``sample_every`` batches is timed."""

    rate: float
    seconds: float
    batch_size: int
    customers: int
    samples_per_s: float
    event: str = PACED_EVENT

    @property
    def total(self) -> int:
        """Events offered in the phase."""
        return round(self.rate * self.seconds)

    @property
    def interval(self) -> float:
        """Seconds between two batches' due times."""
        return self.batch_size / self.rate

    @property
    def sample_every(self) -> int:
        """Batches between two timed track events."""
        return max(1, round(self.rate / self.batch_size / self.samples_per_s))

    def batches(self) -> list[list[Call]]:
        """Every batch in send order (event ``n`` goes to customer ``n % customers``)."""
        calls: list[Call] = [
            {
                "type": "track",
                "userId": f"bench-{n % self.customers}",
                "event": self.event,
                "messageId": f"{self.event}-{n}",
                "properties": {"n": n, "sku": f"sku-{n % 97}"},
            }
            for n in range(self.total)
        ]
        return [calls[i : i + self.batch_size] for i in range(0, len(calls), self.batch_size)]

    def track_samples(self) -> dict[int, TrackSample]:
        """Batch index -> its timed event (the batch's first)."""
        samples = {}
        for index in range(0, -(-self.total // self.batch_size), self.sample_every):
            n = index * self.batch_size
            user_id = f"bench-{n % self.customers}"
            samples[index] = TrackSample(user_id, n // self.customers + 1)
        return samples


@dataclass
class Sampler:
    """Freshness samples, at most ``max_in_flight`` at once (one offered beyond that is
    skipped and counted, so the sampler cannot pile load on the stack it measures)."""

    max_in_flight: int
    poll_s: float
    latencies: list[float] = field(default_factory=list)
    polls: int = 0
    skipped: int = 0
    timed_out: int = 0
    failed: int = 0
    poll_errors: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def offer(self, sample: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``sample`` unless ``max_in_flight`` are running."""
        if len(self._tasks) >= self.max_in_flight:
            self.skipped += 1
            return
        task = asyncio.create_task(sample())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(self, visible: Callable[[], Awaitable[bool]], accepted: float) -> None:
        """Poll ``visible`` until true, every ``poll_s`` or ``POLL_SHARE`` of the time waited
        so far if longer (a slow sample is timed to within that share, and a backlog of
        seconds does not turn into hundreds of polls); keep seconds since ``accepted``."""
        while True:
            self.polls += 1
            if await visible():
                self.latencies.append(time.perf_counter() - accepted)
                return
            if time.perf_counter() - accepted > SAMPLE_TIMEOUT_S:
                self.timed_out += 1
                return
            waited = time.perf_counter() - accepted
            await asyncio.sleep(max(self.poll_s, waited * POLL_SHARE))

    async def drain(self) -> None:
        """Wait for the samples still running."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def counts(self) -> dict[str, int]:
        """How many were kept, and what the sampling itself did."""
        return {
            "samples": len(self.latencies),
            "polls": self.polls,
            "skipped_at_max_in_flight": self.skipped,
            "timed_out": self.timed_out,
            "failed": self.failed,
            "poll_errors": self.poll_errors,
        }


@dataclass
class SendReport:
    """What the open-loop sender did: each batch's lag from its due time to its request
    going out, request latencies, the accepted events and failures."""

    interval: float
    lags: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    max_waiting: int = 0
    first_due: float = 0.0
    last_done: float = 0.0

    @property
    def late(self) -> int:
        """Batches whose request went out more than one interval after they were due (the
        sender fell behind, or every connection was busy)."""
        return sum(1 for lag in self.lags if lag > self.interval)


async def send_paced(
    platform: Platform,
    plan: Plan,
    connections: int,
    on_sample: Callable[[TrackSample, float], None],
) -> SendReport:
    """Queue every batch of ``plan`` at its due time, whether or not earlier requests have
    returned, and POST them over ``connections`` connections (``platform``'s client should
    allow as many): a batch due while all are busy waits in this queue, where waiting is
    cheap, and its lag counts the wait. ``on_sample(sample, accepted_at)`` for each timed
    event once its batch is accepted."""
    report = SendReport(plan.interval)
    samples = plan.track_samples()
    queue: asyncio.Queue[tuple[int, float, list[Call]] | None] = asyncio.Queue()

    async def post() -> None:
        while (item := await queue.get()) is not None:
            index, due, batch = item
            sent = time.perf_counter()
            report.lags.append(sent - due)
            try:
                response = await platform.send("/v1/batch", {"batch": batch})
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            else:
                outcome = "" if response.status_code == 200 else str(response.status_code)
            done = time.perf_counter()
            report.latencies.append(done - sent)
            report.last_done = max(report.last_done, done)
            if outcome:
                report.failed[outcome] = report.failed.get(outcome, 0) + 1
                continue
            report.accepted += len(batch)
            if index in samples:
                on_sample(samples[index], done)

    workers = [asyncio.create_task(post()) for _ in range(connections)]
    report.first_due = time.perf_counter() + 0.01
    for index, batch in enumerate(plan.batches()):
        due = report.first_due + index * plan.interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((index, due, batch))
        report.max_waiting = max(report.max_waiting, queue.qsize())
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return report


async def sample_identifies(
    platform: Platform, sampler: Sampler, per_s: float, seconds: float
) -> None:
    """Offer an identify sample every ``1 / per_s`` s on the clock for ``seconds``: seconds
    from 200 OK on identify to the trait being visible through GraphQL."""

    async def one(n: int) -> None:
        user_id = f"fresh-paced-{n}-{time.time_ns()}"
        response = await platform.send("/v1/identify", {"userId": user_id, "traits": {"n": n}})
        if response.status_code != 200:
            sampler.failed += 1
            return
        accepted = time.perf_counter()

        async def visible() -> bool:
            response = await platform.graphql(CUSTOMER_QUERY, {"type": "user_id", "value": user_id})
            body = response.json() if response.status_code == 200 else {}
            if "data" not in body or "errors" in body:
                # An overloaded stack answers UNAVAILABLE: counted, and polled again.
                sampler.poll_errors += 1
                return False
            customer = body["data"]["customer"]
            return bool(customer and customer["traits"].get("n") == n)

        await sampler.watch(visible, accepted)

    started = time.perf_counter()
    for n in range(int(per_s * seconds)):
        delay = started + n / per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sampler.offer(functools.partial(one, n))


class TrackProbe:
    """Reads a sampled customer's paced count from the profile store by customer id (a read
    by ``_id``: cheaper for the stack than a GraphQL call through the gateway and two
    services)."""

    def __init__(self, mongo_uri: str, customer_ids: dict[str, str]) -> None:
        self.client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(mongo_uri)
        self.profiles = self.client["lodestar_profile"]["profiles"]
        self.customer_ids = customer_ids

    def sample(self, sampler: Sampler, plan: Plan, sample: TrackSample, accepted: float) -> None:
        """Offer the timing of ``sample`` (accepted at ``accepted``) to ``sampler``."""
        customer_id = self.customer_ids[sample.user_id]

        async def reflected() -> bool:
            doc = await self.profiles.find_one({"_id": customer_id}, {"event_counts": 1})
            counts = (doc or {}).get("event_counts") or {}
            return int(counts.get(plan.event, 0)) >= sample.count

        sampler.offer(lambda: sampler.watch(reflected, accepted))

    async def wait_all(self, plan: Plan, timeout_s: float) -> float | None:
        """Seconds until every paced event is counted in the profiles (None at
        ``timeout_s``): customer ``c`` gets ``total // customers`` events, plus one for the
        first ``total % customers``."""
        field_ = f"event_counts.{plan.event}"
        each, extra = divmod(plan.total, plan.customers)
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            done = await self.profiles.count_documents({field_: {"$gte": each}})
            if done >= plan.customers and (
                not extra
                or await self.profiles.count_documents({field_: {"$gte": each + 1}}) >= extra
            ):
                return time.perf_counter() - started
            await asyncio.sleep(0.25)
        return None

    def close(self) -> None:
        """Disconnect."""
        self.client.close()


async def resolve_customers(platform: Platform, user_ids: set[str]) -> dict[str, str]:
    """Customer id of each user id, through GraphQL (before the phase: not in its window)."""
    found: dict[str, str] = {}
    for user_id in sorted(user_ids):
        customer = await platform.customer("user_id", user_id)
        if customer is None:
            raise RuntimeError(f"bench customer {user_id} is not known after the bulk run")
        found[user_id] = str(customer["id"])
    return found


@dataclass(frozen=True)
class BusCounts:
    """One read of the bus counters summed over the stack's processes: messages produced by
    topic; consumed by (topic, group); batches committed and their seconds by group."""

    produced: dict[str, float]
    consumed: dict[tuple[str, str], float]
    batches: dict[str, float]
    batch_seconds: dict[str, float]
    at: float


async def bus_counts(stack: Stack, http: httpx.AsyncClient) -> BusCounts:
    """Read every process's ``/metrics`` once."""
    produced: dict[str, float] = {}
    consumed: dict[tuple[str, str], float] = {}
    batches: dict[str, float] = {}
    batch_seconds: dict[str, float] = {}
    at = time.perf_counter()
    for url, headers in metrics_endpoints(stack).values():
        response = await http.get(url, headers=headers)
        response.raise_for_status()
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "lodestar_bus_produced_total":
                    topic = labels["topic"]
                    produced[topic] = produced.get(topic, 0.0) + sample.value
                elif sample.name == "lodestar_bus_consumed_total":
                    key = (labels["topic"], labels["group"])
                    consumed[key] = consumed.get(key, 0.0) + sample.value
                elif sample.name == "lodestar_bus_batch_seconds_count":
                    batches[labels["group"]] = batches.get(labels["group"], 0.0) + sample.value
                elif sample.name == "lodestar_bus_batch_seconds_sum":
                    group = labels["group"]
                    batch_seconds[group] = batch_seconds.get(group, 0.0) + sample.value
    return BusCounts(produced, consumed, batches, batch_seconds, at)


def backlog(counts: BusCounts) -> dict[tuple[str, str], float]:
    """Messages produced to each (topic, group)'s topic and not yet handled by the group, from
    the processes' lifetime counters (the stack's topics are its own; a batch redelivered
    after a rebalance is counted twice, which reads as less backlog)."""
    return {
        (topic, group): counts.produced.get(topic, 0.0) - consumed
        for (topic, group), consumed in counts.consumed.items()
    }


def machine_ticks() -> tuple[int, int]:
    """All CPUs' busy and total clock ticks since boot, from ``/proc/stat`` (idle and iowait
    are not busy): what else the machine ran in a window."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    fields = [int(v) for v in line.split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class BusWatch:
    """Reads the bus counters every ``BUS_SCRAPE_S`` during the phase, keeping each consumer
    group's largest backlog seen (its topics' messages produced and not yet handled)."""

    stack: Stack
    http: httpx.AsyncClient
    start: BusCounts | None = None
    end: BusCounts | None = None
    max_lag: dict[str, float] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Until :meth:`stop`; the first read is the baseline, the last one the end."""
        self.start = await bus_counts(self.stack, self.http)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), BUS_SCRAPE_S)
            self.end = await bus_counts(self.stack, self.http)
            behind: dict[str, float] = {}
            for (_, group), lag in backlog(self.end).items():
                behind[group] = behind.get(group, 0.0) + lag
            for group, lag in behind.items():
                self.max_lag[group] = max(self.max_lag.get(group, 0.0), lag)
            if self._stop.is_set():
                return

    def stop(self) -> None:
        """Take a last read and return from :meth:`run`."""
        self._stop.set()

    def rows(self) -> list[dict[str, Any]]:
        """One record per consumer group: messages and batches handled in the window, the
        mean batch (messages, milliseconds), and its backlog (over its topics) at the start,
        at most (read every ``BUS_SCRAPE_S``) and at the end."""
        assert self.start is not None
        assert self.end is not None
        start, end = self.start, self.end
        seconds = end.at - start.at
        at_start, at_end = backlog(start), backlog(end)
        rows = []
        for group in sorted({group for _, group in end.consumed}):
            keys = sorted(key for key in end.consumed if key[1] == group)
            handled = sum(end.consumed[key] - start.consumed.get(key, 0.0) for key in keys)
            batches = end.batches.get(group, 0.0) - start.batches.get(group, 0.0)
            spent = end.batch_seconds.get(group, 0.0) - start.batch_seconds.get(group, 0.0)
            if not handled and not batches:
                continue
            rows.append(
                {
                    "metric": "bus_group",
                    "group": group,
                    "topics": [topic for topic, _ in keys],
                    "messages": int(handled),
                    "messages_per_s": round(handled / seconds, 1),
                    "batches": int(batches),
                    "mean_batch_messages": round(handled / batches, 1) if batches else None,
                    "mean_batch_ms": round(spent / batches * 1000, 1) if batches else None,
                    "backlog_at_start": int(sum(at_start.get(key, 0.0) for key in keys)),
                    "max_backlog": int(self.max_lag.get(group, 0.0)),
                    "backlog_at_end": int(sum(at_end.get(key, 0.0) for key in keys)),
                }
            )
        return rows


class LogWatch:
    """Counts the stack's log lines at WARNING and above written during the phase, by
    process, level and message (the services log fixed messages without PII; a redelivered
    batch or an unavailable service shows here)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.offsets = {path: path.stat().st_size for path in log_dir.glob("*.log")}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{process: {"LEVEL message": count}}`` since construction."""
        found: dict[str, dict[str, int]] = {}
        for path in sorted(self.log_dir.glob("*.log")):
            with path.open("rb") as log:
                log.seek(self.offsets.get(path, 0))
                text = log.read().decode("utf-8", "replace")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict) or record.get("level") not in LOUD:
                    continue
                key = f"{record['level']} {str(record.get('msg', ''))[:120]}"
                by_message = found.setdefault(path.stem, {})
                by_message[key] = by_message.get(key, 0) + 1
        return found
