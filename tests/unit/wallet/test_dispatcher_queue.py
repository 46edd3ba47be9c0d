"""The push dispatcher's queue under a slow APNs: one entry per pass, capped; every pass still
gets one push with its latest content once APNs answers again (the store poll takes what the
full queue left out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from prometheus_client import REGISTRY

from services.platform.mongo import Document
from services.wallet.clients.apns import ApnsClient
from services.wallet.delivery import GRACE, MAX_QUEUED, Dispatcher
from services.wallet.pushes import PushOutcome, PushResult
from services.wallet.records import StoredPass
from services.wallet.store import WalletStore

PASS_TYPE = "pass.com.example.lodestar.test"


class Clock:
    """The real time, moved on by ``skip`` (to make stored pushes overdue without waiting)."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


class PassStore:
    """The part of the wallet store the dispatcher uses, kept in memory with the same
    rules: a change moves ``update_seq`` on and keeps the earlier ``push_due``; a claim
    leases due pushes; a push clears ``push_due`` only if the pass did not change since."""

    def __init__(self) -> None:
        self.passes: dict[str, dict[str, Any]] = {}
        self._seq = 0

    def change(self, serial: str, content: int, push_at: datetime) -> StoredPass:
        self._seq += 1
        doc = self.passes.setdefault(serial, {"_id": serial, "pass_type_id": PASS_TYPE})
        doc.update(content=content, update_seq=self._seq)
        doc["push_due"] = min(push_at, doc.get("push_due", push_at))
        return cast(StoredPass, dict(doc))

    async def due_pushes(self, now: datetime, limit: int) -> list[Document]:
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        due = [d for d in self.passes.values() if "push_due" in d and d["push_due"] <= now]
        return [dict(d) for d in sorted(due, key=lambda d: d["push_due"])[:limit]]

    async def claim_pushes(
        self, serial_numbers: Sequence[str], now: datetime | None, lease_until: datetime
    ) -> list[Document]:
        await asyncio.sleep(0)
        claimed = []
        for serial in serial_numbers:
            doc = self.passes.get(serial)
            if doc is None or "push_due" not in doc:
                continue
            if now is None or doc["push_due"] <= now:
                doc["push_due"] = lease_until
                claimed.append(dict(doc))
        return claimed

    async def registrations_by_serial(
        self, serial_numbers: Sequence[str]
    ) -> dict[str, list[Document]]:
        await asyncio.sleep(0)
        return {
            s: [{"push_token": f"token-{s}", "pass_type_id": PASS_TYPE, "serial_number": s}]
            for s in serial_numbers
        }

    async def pushed(self, serial_number: str, update_seq: int, extra: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        doc = self.passes[serial_number]
        if doc["update_seq"] == update_seq:
            doc.pop("push_due", None)


class SlowApns:
    """Answers every push 200, but only once ``answer`` is set."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.waiting = 0

    async def push_many(self, targets: Sequence[tuple[str, str]]) -> list[PushResult]:
        self.waiting += 1
        await self.answer.wait()
        return [PushResult(PushOutcome.DELIVERED, 200, "", "id", 1) for _ in targets]


class Setup:
    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.clock = Clock()
        self.store = PassStore()
        self.apns = SlowApns()
        self.announced: list[tuple[str, int, int]] = []
        self.dispatcher = Dispatcher(
            cast(WalletStore, self.store),
            cast(ApnsClient, self.apns),
            clock=self.clock,
            pushed=self._pushed,
            max_queued=max_queued,
        )

    async def _pushed(self, doc: Mapping[str, Any]) -> None:
        self.announced.append((doc["_id"], doc["update_seq"], doc["content"]))

    async def block_every_round(self) -> None:
        """APNs stops answering and every round of pushes hangs on it; one more due pass
        is taken off the queue and waits for a round: the dispatcher takes no more."""
        for n in range(5):
            now = self.clock()
            self.dispatcher.schedule(now, self.store.change(f"blocker-{n}", 0, now))
            if n < 4:
                await until(self._hanging(n + 1), f"round {n + 1} hangs")
        await until(lambda: self.dispatcher.queued == 0, "the fifth waits for a round")

    def _hanging(self, rounds: int) -> Callable[[], bool]:
        return lambda: self.apns.waiting == rounds

    def latest(self, serial: str) -> tuple[int, int]:
        doc = self.store.passes[serial]
        return doc["update_seq"], doc["content"]

    def settled(self, serials: Sequence[str]) -> bool:
        """Every one of ``serials`` announced, nothing queued and no push left due."""
        announced = {a[0] for a in self.announced}
        return (
            announced.issuperset(serials)
            and self.dispatcher.queued == 0
            and not any("push_due" in self.store.passes[s] for s in serials)
        )


async def feed(setup: Setup, changes: int, passes: int) -> int:
    """``changes`` changes round-robin over ``passes`` passes, all due now (yielding every
    1,000 so the dispatcher could run); returns the most entries its heap ever held."""
    peak = 0
    for i in range(changes):
        now = setup.clock()
        setup.dispatcher.schedule(now, setup.store.change(f"pass-{i % passes:04d}", i, now))
        peak = max(peak, len(setup.dispatcher._due))
        if i % 1000 == 999:
            await asyncio.sleep(0)
    return peak


async def until(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    """Wait (yielding) until ``check`` holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        await asyncio.sleep(0.01)


async def test_queue_holds_one_entry_per_pass_under_a_slow_apns() -> None:
    setup = Setup()
    serials = [f"pass-{p:04d}" for p in range(1_000)]
    running = asyncio.create_task(setup.dispatcher.run())
    try:
        await setup.block_every_round()
        peak = await feed(setup, 100_000, 1_000)
        assert peak <= 1_000, f"the queue grew with the changes: {peak} entries"
        assert setup.dispatcher.queued == 1_000
        setup.apns.answer.set()
        await until(lambda: setup.settled(serials), "every pass pushed")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    pushes = sorted(a for a in setup.announced if a[0].startswith("pass-"))
    assert [serial for serial, _, _ in pushes] == serials, "a pass was pushed twice or never"
    for serial, seq, content in pushes:
        assert (seq, content) == setup.latest(serial), f"{serial} went out with old content"
        assert content == 99_000 + int(serial.removeprefix("pass-"))


async def test_full_queue_leaves_new_passes_to_the_store_poll() -> None:
    setup = Setup(max_queued=100)
    serials = [f"pass-{p:04d}" for p in range(1_000)]
    deferred = "lodestar_wallet_push_deferred_total"
    before = REGISTRY.get_sample_value(deferred) or 0.0
    running = asyncio.create_task(setup.dispatcher.run())
    try:
        await setup.block_every_round()
        peak = await feed(setup, 10_000, 1_000)
        assert peak <= 100, f"the queue went past its cap: {peak} entries"
        # The first 100 passes are queued; every change of the other 900 is left out.
        assert REGISTRY.get_sample_value(deferred) == before + 9_000
        setup.apns.answer.set()
        setup.clock.ahead = GRACE + timedelta(seconds=1)  # the stored pushes are overdue
        await until(lambda: setup.settled(serials), "every pass pushed")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    pushes = sorted(a for a in setup.announced if a[0].startswith("pass-"))
    assert [serial for serial, _, _ in pushes] == serials, "a pass was pushed twice or never"
    for serial, seq, content in pushes:
        assert (seq, content) == setup.latest(serial), f"{serial} went out with old content"
