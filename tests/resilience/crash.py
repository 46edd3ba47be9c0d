"""The crash-fault workload of the resilience suite: events streamed through the ingest API
for many customers while one fault is injected, then every profile, segment membership and
the dead-letter topic compared with a reference computed from what was sent.

Customer ``i`` of a run is sent ``2 * (i % 10) + 1`` track events (1, 3, ... 19: 10 on
average), after one identify that gives its profile the trait ``res_index = i`` (how a profile
is matched to the customer that was sent). A segment created before the stream holds those
with at least 11 events: the reference membership is every customer with ``i % 10 >= 5``.
The first ``pass_holders(customers)`` customers carry an Apple loyalty card issued before the
stream and place two orders during it (``10 * (i + 1)`` and 7 EUR): the reference state of
each card is its points, one per euro spent.
Events of all customers interleave; batches that fail while the fault lasts are sent again
with the same message ids, as an SDK retries.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.stack import Stack
from lodestar.v1 import segmentation_pb2, segmentation_pb2_grpc, wallet_pb2, wallet_pb2_grpc
from services.platform import topics
from services.platform.mongo import Document
from tests.support.kafka import end_offsets, unique
from tests.support.platform import Platform

THRESHOLD = 11
BATCH = 100
SENDERS = 4
# How long one batch is retried while the fault lasts before the run fails.
SEND_TIMEOUT_S = 120.0


def sent_count(index: int) -> int:
    """Track events customer ``index`` is sent."""
    return 2 * (index % 10) + 1


def pass_holders(customers: int) -> int:
    """How many of the run's customers (the first ones) carry a loyalty card."""
    return min(50, customers // 4)


def order_totals(index: int) -> list[int]:
    """The orders (in euros) a card holder places during the stream."""
    return [10 * (index + 1), 7]


@dataclass
class FaultResult:
    """What one fault did to the data, and how long it took to heal."""

    fault: str
    customers: int
    sent: int
    stored: int
    lost: int
    duplicated: int
    wrong_profiles: int
    wrong_memberships: int
    wrong_passes: int
    dead_letters_new: int
    recovery_s: float | None
    drain_s: float

    @property
    def exact(self) -> bool:
        """Nothing lost, nothing twice, every membership as the reference says."""
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.wrong_profiles == 0
            and self.wrong_memberships == 0
            and self.wrong_passes == 0
            and self.dead_letters_new == 0
        )

    def row(self) -> dict[str, Any]:
        """The result as a JSON-ready row."""
        return asdict(self)


def kill_and_recover(stack: Stack, name: str) -> None:
    """``kill -9`` one process and wait until the launcher has it serving again."""
    stack.kill(name, signal.SIGKILL)
    stack.wait_running(name, timeout_s=120)


async def dead_letter_total(stack: Stack) -> int:
    """Records ever written to the dead-letter topic (its end offsets summed)."""
    return sum((await end_offsets(stack.kafka_bootstrap, topics.DEADLETTER)).values())


async def create_segment(stack: Stack, segment_id: str, event: str) -> None:
    """The reference audience: customers who did ``event`` at least ``THRESHOLD`` times."""
    rule = {"field": f"event_counts.{event}", "op": "gte", "value": THRESHOLD}
    async with stack.grpc_channel("segmentation") as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        await stub.CreateSegment(
            segmentation_pb2.CreateSegmentRequest(
                id=segment_id, name=segment_id, rule_json=json.dumps(rule)
            ),
            timeout=30,
        )


def workload(tag: str, event: str, customers: int, seed: int) -> list[list[dict[str, Any]]]:
    """The run's calls in batches: identifies first, then interleaved track events."""
    identifies = [
        {"type": "identify", "userId": f"{tag}-{i}", "traits": {"res_index": i}}
        for i in range(customers)
    ]
    tracks: list[dict[str, Any]] = [
        {"type": "track", "userId": f"{tag}-{i}", "event": event, "messageId": f"{tag}-{i}-{n}"}
        for i in range(customers)
        for n in range(sent_count(i))
    ]
    tracks += [
        {
            "type": "track",
            "userId": f"{tag}-{i}",
            "event": "Order Completed",
            "messageId": f"{tag}-{i}-order-{k}",
            "properties": {"order_id": f"{tag}-{i}-{k}", "total": total, "currency": "EUR"},
        }
        for i in range(pass_holders(customers))
        for k, total in enumerate(order_totals(i))
    ]
    random.Random(seed).shuffle(tracks)
    calls = identifies[pass_holders(customers) :] + tracks
    return [calls[i : i + BATCH] for i in range(0, len(calls), BATCH)]


async def send_all(
    http: httpx.AsyncClient,
    stack: Stack,
    batches: list[list[dict[str, Any]]],
    at_fraction: float,
    fault: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """Send every batch (retrying each until accepted); run ``fault`` once ``at_fraction`` of
    the batches were accepted, while the others keep sending."""
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    accepted = 0
    trigger = max(1, int(len(batches) * at_fraction))
    fault_task: asyncio.Task[None] | None = None

    async def sender() -> None:
        nonlocal accepted, fault_task
        while not queue.empty():
            batch = queue.get_nowait()
            deadline = time.monotonic() + SEND_TIMEOUT_S
            while True:
                try:
                    response = await http.post(
                        f"{stack.gateway_url}/v1/batch",
                        json={"batch": batch},
                        auth=(stack.write_key, ""),
                    )
                    if response.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a batch was not accepted within {SEND_TIMEOUT_S} s")
                await asyncio.sleep(0.2)  # the gateway is away or busy: retry, same ids
            accepted += 1
            if accepted == trigger and fault_task is None:
                fault_task = asyncio.create_task(fault())

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    if fault_task is not None:
        await fault_task


async def issue_cards(
    stack: Stack, http: httpx.AsyncClient, tag: str, customers: int
) -> dict[int, str]:
    """Identify the card holders, wait until each is a customer, issue each an Apple
    loyalty card; their serial numbers by customer index."""
    holders = pass_holders(customers)
    calls = [
        {"type": "identify", "userId": f"{tag}-{i}", "traits": {"res_index": i}}
        for i in range(holders)
    ]
    response = await http.post(
        f"{stack.gateway_url}/v1/batch", json={"batch": calls}, auth=(stack.write_key, "")
    )
    response.raise_for_status()
    platform = Platform(stack, http)
    serials: dict[int, str] = {}
    async with stack.grpc_channel("wallet") as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        for i in range(holders):
            customer: dict[str, Any] | None = None
            deadline = time.monotonic() + 60
            while customer is None and time.monotonic() < deadline:
                customer = await platform.customer("user_id", f"{tag}-{i}")
                if customer is None:
                    await asyncio.sleep(0.2)
            assert customer is not None, f"card holder {i} never became a customer"
            card = await wallet.IssuePass(
                wallet_pb2.IssuePassRequest(
                    customer_id=customer["id"],
                    kind=wallet_pb2.PASS_KIND_STORE_CARD,
                    platform=wallet_pb2.WALLET_PLATFORM_APPLE,
                ),
                timeout=30,
            )
            serials[i] = card.serial_number
    return serials


async def card_points(stack: Stack, serials: dict[int, str]) -> dict[int, int | None]:
    """Each card's points as the wallet holds them now."""
    found: dict[int, int | None] = {}
    async with stack.grpc_channel("wallet") as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        for i, serial in serials.items():
            card = await wallet.GetPass(wallet_pb2.GetPassRequest(serial_number=serial), timeout=30)
            points = card.fields.get("points")
            found[i] = int(points) if points and points.isdigit() else None
    return found


async def stored_counts(stack: Stack, event: str) -> dict[int, tuple[str, int]]:
    """Each run customer's profile id and stored count of ``event``, by ``res_index``."""
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongo_uri_for("profile"))
    try:
        profiles = client["lodestar_profile"]["profiles"]
        found: dict[int, tuple[str, int]] = {}
        query = {f"event_counts.{event}": {"$exists": True}, "merged_into": {"$exists": False}}
        async for doc in profiles.find(query, {"traits.res_index": 1, "event_counts": 1}):
            index = doc.get("traits", {}).get("res_index")
            if isinstance(index, int | float):
                found[int(index)] = (doc["_id"], int(doc["event_counts"][event]))
        return found
    finally:
        client.close()


async def members(stack: Stack, segment_id: str) -> set[str]:
    """Customer ids recorded as members of ``segment_id``."""
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongo_uri_for("segmentation"))
    try:
        memberships = client["lodestar_segmentation"]["memberships"]
        return {
            d["customer_id"]
            async for d in memberships.find({"segment_id": segment_id}, {"customer_id": 1})
        }
    finally:
        client.close()


async def settle(
    stack: Stack,
    event: str,
    segment_id: str,
    customers: int,
    serials: dict[int, str],
    timeout_s: float,
) -> tuple[dict[int, tuple[str, int]], set[str], dict[int, int | None]]:
    """Wait until every profile, the segment and every card match the reference (or
    ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await stored_counts(stack, event)
        expected_members = {counts[i][0] for i in counts if sent_count(i) >= THRESHOLD}
        done = len(counts) == customers and all(n == sent_count(i) for i, (_, n) in counts.items())
        current = await members(stack, segment_id)
        points = await card_points(stack, serials) if done else {}
        cards_done = all(points.get(i) == sum(order_totals(i)) for i in serials)
        if (done and current == expected_members and cards_done) or time.monotonic() > deadline:
            return counts, current, points or await card_points(stack, serials)
        await asyncio.sleep(1.0)


async def run_fault(
    stack: Stack,
    http: httpx.AsyncClient,
    fault: str,
    *,
    customers: int,
    seed: int,
    settle_timeout_s: float = 300.0,
) -> FaultResult:
    """Stream one run's events with ``fault`` injected a third of the way in; compare the
    result with the reference. ``fault`` is ``none``, ``kill:<process>`` (``kill -9``, the
    launcher restarts it; ``mongodb`` is the MongoDB-wire server, on file storage) or
    ``stop:<process>:<seconds>`` (SIGSTOP, then SIGCONT)."""
    tag = unique("res").replace("-", "")
    event = f"Resilience {tag}"
    segment_id = f"res-{tag}"
    await create_segment(stack, segment_id, event)
    serials = await issue_cards(stack, http, tag, customers)
    dead_before = await dead_letter_total(stack)
    batches = workload(tag, event, customers, seed)
    recovery: list[float] = []

    async def inject() -> None:
        kind, _, rest = fault.partition(":")
        if kind == "kill":
            started = time.monotonic()
            await asyncio.to_thread(kill_and_recover, stack, rest)
            recovery.append(time.monotonic() - started)
        elif kind == "stop":
            name, _, seconds = rest.partition(":")
            started = time.monotonic()
            stack.send_signal(name, signal.SIGSTOP)
            await asyncio.sleep(float(seconds))
            stack.send_signal(name, signal.SIGCONT)
            await asyncio.to_thread(stack.wait_healthy, name)
            recovery.append(time.monotonic() - started)

    await send_all(http, stack, batches, 1 / 3, inject)
    sent_at = time.monotonic()
    counts, current, points = await settle(
        stack, event, segment_id, customers, serials, settle_timeout_s
    )
    drain_s = time.monotonic() - sent_at
    expected = {i: sent_count(i) for i in range(customers)}
    lost = sum(max(0, n - counts.get(i, ("", 0))[1]) for i, n in expected.items())
    duplicated = sum(max(0, counts[i][1] - n) for i, n in expected.items() if i in counts)
    wrong = sum(1 for i, n in expected.items() if counts.get(i, ("", -1))[1] != n)
    reference = {counts[i][0] for i in counts if sent_count(i) >= THRESHOLD}
    return FaultResult(
        fault=fault,
        customers=customers,
        sent=sum(expected.values()),
        stored=sum(n for _, n in counts.values()),
        lost=lost,
        duplicated=duplicated,
        wrong_profiles=wrong,
        wrong_memberships=len(reference ^ current),
        wrong_passes=sum(1 for i in serials if points.get(i) != sum(order_totals(i))),
        dead_letters_new=await dead_letter_total(stack) - dead_before,
        recovery_s=round(recovery[0], 2) if recovery else None,
        drain_s=round(drain_s, 2),
    )
