"""The push dispatcher on the real wallet store (SecantusDB), with APNs and Google slow to
answer: passes are issued and changed through the store's own methods, so ``update_seq``,
``push_due``, the claim's lease and the cleared push are the store's.

- Under a slow APNs the queue holds one entry per pass (however many changes), capped; every
  pass still gets exactly one push with its latest content once APNs answers again (the
  store poll takes what the full queue left out).
- A pass the queue pushed is not pushed again by a store-poll claim taken while that push
  was in flight (both hold every overdue pass after an outage).
- Google: one version of a pass is synced once; a change made while a sync is in flight gets
  exactly one more sync, never two at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client import REGISTRY

from services.platform.mongo import Document
from services.wallet import delivery
from services.wallet.delivery import GRACE, LEASE, MAX_QUEUED, Dispatcher
from services.wallet.passes import GOOGLE
from services.wallet.records import StoredPass
from tests.support.wallet_dispatch import (
    Clock,
    GatedApns,
    GatedGoogle,
    GatedStore,
    add_passes,
    change_and_schedule,
    gated_store,
    points,
    until,
)

# Passes changed, and rounds of changes to each: many more changes than passes.
PASSES = 30
ROUNDS_OF_CHANGES = 20


@pytest.fixture
async def store(client: AsyncIOMotorClient[Document]) -> GatedStore:
    """The wallet store on a database of its own; its claims answer at once."""
    return await gated_store(client)


class Setup:
    """A dispatcher on the store, pushing through an APNs that answers when told."""

    def __init__(self, store: GatedStore, max_queued: int = MAX_QUEUED) -> None:
        self.clock = Clock()
        self.store = store
        self.apns = GatedApns()
        self.announced: list[tuple[str, int, int]] = []
        self.dispatcher = Dispatcher(
            store, self.apns, clock=self.clock, pushed=self._pushed, max_queued=max_queued
        )

    async def _pushed(self, doc: StoredPass) -> None:
        self.announced.append((doc["_id"], doc["update_seq"], points(doc)))

    async def block_every_round(self) -> None:
        """APNs stops answering and every round of pushes hangs on it; one more due pass
        is taken off the queue and waits for a round: the dispatcher takes no more."""
        blockers = await add_passes(
            self.store, [f"blocker-{n}" for n in range(delivery.ROUNDS + 1)], self.clock()
        )
        for n, blocker in enumerate(blockers):
            now = self.clock()
            await change_and_schedule(
                self.store, self.dispatcher, blocker["_id"], 1, now, current=blocker
            )
            if n < delivery.ROUNDS:
                await until(self._hanging(n + 1), f"round {n + 1} hangs on APNs")
        await until(lambda: self.dispatcher.queued == 0, "the last blocker waits for a round")

    def _hanging(self, rounds: int) -> Callable[[], bool]:
        return lambda: self.apns.waiting == rounds

    async def feed(self, passes: Sequence[StoredPass], rounds: int) -> int:
        """``rounds`` changes of every pass (change ``i`` sets points to ``i``, round-robin
        over the passes, one batch write per round), each scheduled as it is stored; returns
        the most entries the dispatcher's heap ever held."""
        peak = 0
        current = list(passes)
        for r in range(rounds):
            now = self.clock()
            changed = await self.store.change_passes(
                [(doc, {"fields.points": r * len(current) + p}) for p, doc in enumerate(current)],
                now,
                now,
            )
            current = []
            for doc in changed:
                assert doc is not None
                current.append(doc)
                self.dispatcher.schedule(now, doc)
                peak = max(peak, len(self.dispatcher._due))
        return peak

    async def settled(self, serials: Sequence[str]) -> bool:
        """Every one of ``serials`` announced, nothing queued and no push left pending."""
        announced = {a[0] for a in self.announced}
        return (
            announced.issuperset(serials)
            and self.dispatcher.queued == 0
            and await self.store.pending_of(serials) == []
        )

    async def assert_one_push_each_with_its_latest_content(self, serials: Sequence[str]) -> None:
        pushes = sorted(a for a in self.announced if a[0].startswith("pass-"))
        assert [serial for serial, _, _ in pushes] == list(serials), (
            "a pass was pushed twice or never"
        )
        for serial, seq, content in pushes:
            latest = await self.store.get_pass(serial)
            assert latest is not None
            assert (seq, content) == (latest["update_seq"], points(latest)), (
                f"{serial} went out with old content"
            )


def running(dispatcher: Dispatcher) -> asyncio.Task[None]:
    """The dispatcher's loop, started."""
    return asyncio.create_task(dispatcher.run())


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel the dispatcher's loop and wait for it."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def serials_of(count: int) -> list[str]:
    """The serial numbers of the changed passes."""
    return [f"pass-{p:04d}" for p in range(count)]


async def test_queue_holds_one_entry_per_pass_under_a_slow_apns(store: GatedStore) -> None:
    setup = Setup(store)
    serials = serials_of(PASSES)
    passes = await add_passes(store, serials, setup.clock())
    loop = running(setup.dispatcher)
    try:
        await setup.block_every_round()
        peak = await setup.feed(passes, ROUNDS_OF_CHANGES)
        assert peak <= PASSES, f"the queue grew with the changes: {peak} entries"
        assert setup.dispatcher.queued == PASSES
        setup.apns.answer.set()
        await until(lambda: setup.settled(serials), "every pass pushed")
    finally:
        await stop(loop)
    await setup.assert_one_push_each_with_its_latest_content(serials)
    # The latest content is the last round's change of each pass.
    last_round = (ROUNDS_OF_CHANGES - 1) * PASSES
    for serial, _, content in setup.announced:
        if serial.startswith("pass-"):
            assert content == last_round + int(serial.removeprefix("pass-"))


async def test_full_queue_leaves_new_passes_to_the_store_poll(store: GatedStore) -> None:
    cap = 5
    setup = Setup(store, max_queued=cap)
    serials = serials_of(PASSES)
    passes = await add_passes(store, serials, setup.clock())
    deferred = "lodestar_wallet_push_deferred_total"
    before = REGISTRY.get_sample_value(deferred) or 0.0
    loop = running(setup.dispatcher)
    try:
        await setup.block_every_round()
        peak = await setup.feed(passes, ROUNDS_OF_CHANGES)
        assert peak <= cap, f"the queue went past its cap: {peak} entries"
        # The first ``cap`` passes are queued; every change of the others is left out.
        assert REGISTRY.get_sample_value(deferred) == before + (PASSES - cap) * ROUNDS_OF_CHANGES
        setup.apns.answer.set()
        setup.clock.ahead = GRACE + timedelta(seconds=1)  # the stored pushes are overdue
        await until(lambda: setup.settled(serials), "every pass pushed")
    finally:
        await stop(loop)
    await setup.assert_one_push_each_with_its_latest_content(serials)


async def test_a_claim_taken_during_a_push_does_not_push_that_version_again(
    client: AsyncIOMotorClient[Document],
) -> None:
    store = await gated_store(client, claim_open=False)
    setup = Setup(store)
    clock, apns, dispatcher = setup.clock, setup.apns, setup.dispatcher
    await add_passes(store, ["p1"], clock())
    loop = running(dispatcher)
    try:
        now = clock()
        changed = await change_and_schedule(store, dispatcher, "p1", 1, now)
        await until(lambda: apns.waiting == 1, "the queue's push waits for APNs")
        # The push is overdue: the store poll claims it while the queue's push is in flight.
        clock.ahead = GRACE * 2
        await until(store.claiming.is_set, "the poll claims the overdue push")
        apns.answer.set()
        await until(lambda: store.push_cleared("p1"), "the queue's push recorded in the store")
        store.claim_gate.set()
        # The claimed round runs to its end (pushing again, or not).
        await until(lambda: not dispatcher._in_flight, "the claimed round finished")
        await until(lambda: dispatcher.queued == 0, "nothing left queued")
        assert apns.pushes == 1, "the phone was told twice about the same version"
        assert setup.announced == [("p1", changed["update_seq"], 1)]
    finally:
        await stop(loop)


@pytest.mark.parametrize("changed_meanwhile", [False, True])
@pytest.mark.parametrize("claim_answers_after_the_sync", [False, True])
async def test_a_google_pass_held_by_the_queue_and_the_poll_is_synced_once_per_version(
    store: GatedStore,
    changed_meanwhile: bool,
    claim_answers_after_the_sync: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Polls every 50 ms, so a test sees several without waiting seconds.
    monkeypatch.setattr(delivery, "POLL_S", 0.05)
    clock, google = Clock(), GatedGoogle()
    dispatcher = Dispatcher(store, None, google, clock=clock)
    await add_passes(store, ["g1"], clock(), platform=GOOGLE)
    loop = running(dispatcher)
    try:
        now = clock()
        first = await change_and_schedule(store, dispatcher, "g1", 1, now)
        versions = [first["update_seq"]]
        await until(lambda: google.synced == versions, "the queue's sync waits for Google")
        if changed_meanwhile:
            second = await change_and_schedule(store, dispatcher, "g1", 2, now)
            versions.append(second["update_seq"])
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
        await until(lambda: store.push_cleared("g1"), "the latest version synced")
        clock.ahead = GRACE * 6 + LEASE * 2
        polls = store.polls
        await until(lambda: store.polls > polls + 3, "the poll ran after the last sync")
        await until(lambda: not dispatcher._in_flight, "every round finished")
        assert google.synced == versions
        assert google.most_at_once == 1, "two syncs of one pass in flight at once"
        assert dispatcher.queued == 0
    finally:
        await stop(loop)
