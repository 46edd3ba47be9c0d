"""The push dispatcher and Google passes while Google is slow to answer: the queue and the
store poll both hold an overdue pass, yet one version of a pass is synced once. A sync
that read the pass before a change made while it was in flight is followed by exactly one
sync of the newer version (two PATCHes then, of different content: both needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from services.wallet import delivery
from services.wallet.delivery import GRACE, LEASE, Dispatcher
from services.wallet.passes import GOOGLE
from services.wallet.records import GoogleIds, Registration, StoredPass


class Clock:
    """The real time, moved on by ``ahead``."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


class PassStore:
    """The store's push rules in memory, as the wallet store keeps them: a claim leases by
    ``push_claim``, a push clears ``push_due`` only when the pass did not change. A claim's
    answer waits for ``claim_gate``, as a slow round trip would."""

    def __init__(self) -> None:
        self.passes: dict[str, dict[str, Any]] = {}
        self.polls = 0
        self.claims = 0
        self.claim_gate = asyncio.Event()
        self.claim_gate.set()

    def change(self, serial: str, push_at: datetime) -> StoredPass:
        doc = self.passes.setdefault(serial, {"_id": serial, "platform": GOOGLE})
        doc["update_seq"] = doc.get("update_seq", 0) + 1
        doc["push_due"] = min(push_at, doc.get("push_due", push_at))
        return cast(StoredPass, dict(doc))

    async def due_pushes(self, now: datetime, limit: int) -> list[StoredPass]:
        await asyncio.sleep(0)
        self.polls += 1
        due = [d for d in self.passes.values() if d.get("push_due", now) < now]
        return [cast(StoredPass, dict(d)) for d in due][:limit]

    async def claim_pushes(
        self, serial_numbers: Sequence[str], now: datetime | None, lease_until: datetime
    ) -> list[StoredPass]:
        await asyncio.sleep(0)
        claim = object()
        for serial in serial_numbers:
            doc = self.passes[serial]
            if "push_due" in doc and (now is None or doc["push_due"] <= now):
                doc.update(push_due=lease_until, push_claim=claim)
        self.claims += 1
        await self.claim_gate.wait()
        # Found by its claim, as the store's second round trip finds it.
        return [
            cast(StoredPass, dict(self.passes[s]))
            for s in serial_numbers
            if self.passes[s].get("push_claim") is claim
        ]

    async def registrations_by_serial(
        self, serial_numbers: Sequence[str]
    ) -> dict[str, list[Registration]]:
        await asyncio.sleep(0)
        return {}

    async def get_pass(self, serial_number: str) -> StoredPass | None:
        await asyncio.sleep(0)
        found = self.passes.get(serial_number)
        return None if found is None else cast(StoredPass, dict(found))

    async def pushed(self, serial_number: str, update_seq: int, extra: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        doc = self.passes[serial_number]
        doc.update(extra)
        if doc["update_seq"] == update_seq:
            doc.pop("push_due", None)

    async def delete_registration(self, registration: str) -> bool:
        return False


class GatedGoogle:
    """Patches once ``answer`` is set; records the version of every sync begun and the
    most syncs in flight at once."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.synced: list[int] = []
        self.in_flight = 0
        self.most_at_once = 0

    async def sync(self, doc: StoredPass) -> GoogleIds:
        self.synced.append(int(doc["update_seq"]))
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            await self.answer.wait()
        finally:
            self.in_flight -= 1
        return cast(GoogleIds, {"object_id": f"object-{doc['_id']}"})


async def until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s}s"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("changed_meanwhile", [False, True])
@pytest.mark.parametrize("claim_answers_after_the_sync", [False, True])
async def test_a_google_pass_held_by_the_queue_and_the_poll_is_synced_once_per_version(
    changed_meanwhile: bool, claim_answers_after_the_sync: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "POLL_S", 0.01)
    clock, store, google = Clock(), PassStore(), GatedGoogle()
    dispatcher = Dispatcher(store, None, google, clock=clock)
    running = asyncio.create_task(dispatcher.run())
    try:
        now = clock()
        dispatcher.schedule(now, store.change("g1", now))
        await until(lambda: google.synced == [1], "the queue's sync waits for Google")
        if changed_meanwhile:
            dispatcher.schedule(now, store.change("g1", now))
        # The push is overdue: the store poll claims it while the queue's sync is in flight.
        if claim_answers_after_the_sync:
            store.claim_gate.clear()
        clock.ahead = GRACE * 2
        claims = store.claims
        await until(lambda: store.claims > claims, "the poll claims the overdue push")
        google.answer.set()
        if claim_answers_after_the_sync:
            await until(lambda: not dispatcher._busy, "the queue's sync recorded")
            store.claim_gate.set()
        # Past the claim's lease, the poll takes what is still due.
        clock.ahead = GRACE * 4 + LEASE
        await until(lambda: "push_due" not in store.passes["g1"], "the latest version synced")
        clock.ahead = GRACE * 6 + LEASE * 2
        polls = store.polls
        await until(lambda: store.polls > polls + 3, "the poll ran after the last sync")
        await until(lambda: not dispatcher._in_flight, "every round finished")
        assert google.synced == ([1, 2] if changed_meanwhile else [1])
        assert google.most_at_once == 1, "two syncs of one pass in flight at once"
        assert dispatcher.queued == 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
