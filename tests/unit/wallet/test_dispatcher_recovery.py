"""The push dispatcher when APNs answers again after a while: a pass its queue pushed is not
pushed a second time by the store poll's claim taken while that push was in flight (both
paths hold a pass whose push is overdue, which is every pass during an APNs outage)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from services.platform.mongo import Document
from services.wallet.clients.apns import ApnsClient
from services.wallet.delivery import GRACE, Dispatcher
from services.wallet.pushes import PushOutcome, PushResult
from services.wallet.records import StoredPass
from services.wallet.store import WalletStore

PASS_TYPE = "pass.com.example.lodestar.test"


class Clock:
    """The real time, moved on by ``ahead``."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


class GatedStore:
    """The store's push rules in memory (as the wallet store keeps them: a claim leases by
    ``push_claim``, a push clears ``push_due`` when the pass did not change); the claim's
    answer waits for ``claim_gate``, as a slow round trip would."""

    def __init__(self) -> None:
        self.passes: dict[str, dict[str, Any]] = {}
        self.claim_gate = asyncio.Event()
        self.claiming = asyncio.Event()

    def change(self, serial: str, push_at: datetime) -> StoredPass:
        doc = self.passes.setdefault(serial, {"_id": serial, "pass_type_id": PASS_TYPE})
        doc["update_seq"] = doc.get("update_seq", 0) + 1
        doc["push_due"] = min(push_at, doc.get("push_due", push_at))
        return cast(StoredPass, dict(doc))

    async def due_pushes(self, now: datetime, limit: int) -> list[Document]:
        await asyncio.sleep(0)
        return [dict(d) for d in self.passes.values() if d.get("push_due", now) < now][:limit]

    async def claim_pushes(
        self, serial_numbers: Sequence[str], now: datetime | None, lease_until: datetime
    ) -> list[Document]:
        claim = object()
        for serial in serial_numbers:
            doc = self.passes[serial]
            if "push_due" in doc and (now is None or doc["push_due"] <= now):
                doc.update(push_due=lease_until, push_claim=claim)
        self.claiming.set()
        await self.claim_gate.wait()
        # Found by its claim, as the store's second round trip finds it.
        return [
            dict(self.passes[s])
            for s in serial_numbers
            if self.passes[s].get("push_claim") is claim
        ]

    async def registrations_by_serial(self, serials: Sequence[str]) -> dict[str, list[Document]]:
        await asyncio.sleep(0)
        return {
            s: [{"push_token": f"token-{s}", "pass_type_id": PASS_TYPE, "serial_number": s}]
            for s in serials
        }

    async def pushed(self, serial_number: str, update_seq: int, extra: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        doc = self.passes[serial_number]
        if doc["update_seq"] == update_seq:
            doc.pop("push_due", None)


class GatedApns:
    """Answers 200 once ``answer`` is set; counts the pushes by topic."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.pushes = 0
        self.waiting = 0

    async def push_many(self, targets: Sequence[tuple[str, str]]) -> list[PushResult]:
        self.waiting += 1
        await self.answer.wait()
        self.pushes += len(targets)
        return [PushResult(PushOutcome.DELIVERED, 200, "", "id", 1) for _ in targets]


async def until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s}s"
        await asyncio.sleep(0.01)


async def test_a_claim_taken_during_a_push_does_not_push_that_version_again() -> None:
    clock, store, apns = Clock(), GatedStore(), GatedApns()
    announced: list[tuple[str, int]] = []

    async def pushed(doc: Mapping[str, Any]) -> None:
        announced.append((doc["_id"], doc["update_seq"]))

    dispatcher = Dispatcher(
        cast(WalletStore, store), cast(ApnsClient, apns), clock=clock, pushed=pushed
    )
    running = asyncio.create_task(dispatcher.run())
    try:
        now = clock()
        dispatcher.schedule(now, store.change("p1", now))
        await until(lambda: apns.waiting == 1, "the queue's push waits for APNs")
        # The push is overdue: the store poll claims it while the queue's push is in flight.
        clock.ahead = GRACE * 2
        await until(store.claiming.is_set, "the poll claims the overdue push")
        apns.answer.set()
        await until(lambda: "push_due" not in store.passes["p1"], "the queue's push recorded")
        store.claim_gate.set()
        # The claimed round runs to its end (pushing again, or not).
        await until(lambda: not dispatcher._in_flight, "the claimed round finished")
        await until(lambda: dispatcher.queued == 0, "nothing left queued")
        assert apns.pushes == 1, "the phone was told twice about the same version"
        assert announced == [("p1", 1)]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
