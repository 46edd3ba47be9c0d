"""Delivery of pass changes to phones.

A change stores the pass and its ``push_due`` time in one write, and hands the changed pass
to the dispatcher of its process, which pushes it at the due time without another read.
Pushes no process delivered within ``GRACE`` of their due time (another replica's, or one
a crash left behind) are found by polling the store and claimed in bulk for a lease first,
so replicas do not push them twice and a crash retries them after the lease. Then:

- Apple: one APNs push (empty body, topic = pass type id) to every registered device; the
  phone then fetches the pass from the PassKit web service. APNs 410 deletes the
  registration and reports the pass removed.
- Google: patches the object (``NOTIFY_ON_UPDATE``) and adds a ``TEXT_AND_NOTIFY`` message
  for every announced field change, the same texts Apple shows on the lock screen.

The pending push is cleared only when the pass did not change meanwhile; otherwise it goes
out again. Many changes before the push leave with it: that is the coalescing. A pass's
version this process has pushed is not pushed again: while APNs fails, the queue and the
store poll both hold the pass, and the one that comes second after recovery would tell the
phones twice.

The dispatcher keeps one entry per pass (its earliest due time and its latest content): a
later change of a queued pass replaces the content, never adds an entry. At most
``MAX_QUEUED`` passes wait in memory; a change of another pass while it is full is left to
the store poll (its ``push_due`` is stored with the change), so it goes out ``GRACE`` later
instead of growing the queue however slow APNs is.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from services.wallet.passes import APPLE, GOOGLE
from services.wallet.pushes import PushOutcome, PushResult
from services.wallet.records import GoogleIds, Registration, StoredPass, registration_id

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)
BATCH = 500
# How often the store is asked for pushes overdue by GRACE (this process was not told about
# them, or failed to deliver them).
POLL_S = 1.0
GRACE = timedelta(seconds=5)
BUSY_RETRY = timedelta(milliseconds=50)
# Rounds of pushes in flight at once: a slow round does not hold back the next due pushes.
ROUNDS = 4
# Passes waiting in memory for their push, at most (see the module docstring).
MAX_QUEUED = 10_000

PUSH_QUEUE = Gauge(
    "lodestar_wallet_push_queue", "Passes waiting in the dispatcher's memory for their push"
)
PUSH_DEFERRED = Counter(
    "lodestar_wallet_push_deferred_total",
    "Pass changes the full dispatcher queue left to the store poll",
)
PUSHES = Counter(
    "lodestar_wallet_pushes_total",
    "Pass updates sent to phones: apple = one APNs push per device (unregistered: the phone "
    "removed the pass), google = one sync of the object; failed = not delivered",
    ["platform", "outcome"],
)
# An APNs push's outcome as a push counted in PUSHES.
_APNS_OUTCOMES = {
    PushOutcome.DELIVERED: "sent",
    PushOutcome.UNREGISTERED: "unregistered",
    PushOutcome.REJECTED: "failed",
    PushOutcome.FAILED: "failed",
}


class PushStore(Protocol):
    """Where the dispatcher finds, claims and records pushes (the wallet's store)."""

    async def due_pushes(self, now: datetime, limit: int) -> list[StoredPass]:
        """Passes whose push is due, oldest first."""
        ...

    async def claim_pushes(
        self, serial_numbers: Sequence[str], now: datetime | None, lease_until: datetime
    ) -> list[StoredPass]:
        """Take these passes' due pushes for a lease; the passes taken."""
        ...

    async def registrations_by_serial(
        self, serial_numbers: Sequence[str]
    ) -> dict[str, list[Registration]]:
        """The devices registered for each of these passes."""
        ...

    async def get_pass(self, serial_number: str) -> StoredPass | None:
        """One pass, or None."""
        ...

    async def pushed(self, serial_number: str, update_seq: int, extra: Mapping[str, Any]) -> None:
        """Record a push of the pass as it was at ``update_seq``."""
        ...

    async def delete_registration(self, registration: str) -> bool:
        """Remove one registration by its key; True when it existed."""
        ...


class PushSender(Protocol):
    """APNs as the dispatcher uses it (:class:`services.wallet.clients.apns.ApnsClient`)."""

    async def push_many(self, targets: Sequence[tuple[str, str]]) -> list[PushResult]:
        """Push to every ``(device_token, topic)``; results in the order of ``targets``."""
        ...


class GoogleSync(Protocol):
    """Brings a Google object up to date with the stored pass; returns the ``google`` part
    of the pass to store (ids and the field values messages were derived from)."""

    async def sync(self, doc: StoredPass) -> GoogleIds:
        """Patch the object and send its messages."""
        ...


Removed = Callable[[StoredPass, str, str], Awaitable[object]]
# Told of every pass a change went out for (at least one APNs push delivered, or the Google
# object updated).
Pushed = Callable[[StoredPass], Awaitable[object]]


class Dispatcher:
    """Pushes pass changes when they are due."""

    def __init__(
        self,
        store: PushStore,
        apns: PushSender | None,
        google: GoogleSync | None = None,
        removed: Removed | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        pushed: Pushed | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.store = store
        self.apns = apns
        self.google = google
        self.removed = removed
        self.pushed = pushed
        self.clock = clock
        self.max_queued = max(1, max_queued)
        self._wake = asyncio.Event()
        # Exactly one heap entry per queued pass, at its due time in ``_queued``.
        self._due: list[tuple[datetime, str]] = []
        self._queued: dict[str, tuple[datetime, StoredPass]] = {}
        # Passes being pushed now: a newer change of one waits for that push to finish, so
        # one pass never has two pushes (or two Google syncs) in flight.
        self._busy: set[str] = set()
        self._rounds = asyncio.Semaphore(ROUNDS)
        self._in_flight: set[asyncio.Task[None]] = set()
        # The update_seq each pass was last pushed at, the most recent ``max_queued`` passes
        # (a pass forgotten here can at worst be pushed once more, never missed).
        self._sent: OrderedDict[str, int] = OrderedDict()

    @property
    def queued(self) -> int:
        """Passes waiting in memory for their push."""
        return len(self._queued)

    def schedule(self, due: datetime, doc: StoredPass) -> None:
        """The changed pass ``doc`` is to be pushed at ``due`` (called by every change in
        this process). A queued pass keeps one entry: the earlier due time (as the store
        keeps it) and the newer content. A pass not queued while the queue is full is left
        to the store poll. Only a push due before every other one wakes the loop."""
        serial = doc["_id"]
        earliest = self._due[0][0] if self._due else None
        queued = self._queued.get(serial)
        if queued is not None:
            queued_due, queued_doc = queued
            newer = doc if _seq(doc) >= _seq(queued_doc) else queued_doc
            self._queued[serial] = (min(due, queued_due), newer)
            if due >= queued_due:
                return
            self._reheap()  # rare: moved earlier (the store kept the earlier time as well)
        elif len(self._queued) >= self.max_queued:
            PUSH_DEFERRED.inc()
            return
        else:
            self._queued[serial] = (due, doc)
            heapq.heappush(self._due, (due, serial))
            PUSH_QUEUE.set(len(self._queued))
        if earliest is None or due < earliest:
            self._wake.set()

    def _reheap(self) -> None:
        self._due = [(due, serial) for serial, (due, _) in self._queued.items()]
        heapq.heapify(self._due)
        PUSH_QUEUE.set(len(self._queued))

    def _forget(self, claimed: Sequence[StoredPass]) -> None:
        """Drop queued entries the claimed passes cover (content no newer than claimed): the
        claim pushes them, so the queue does not push them again."""
        gone = [
            d["_id"]
            for d in claimed
            if (queued := self._queued.get(d["_id"])) is not None and _seq(queued[1]) <= _seq(d)
        ]
        for serial in gone:
            del self._queued[serial]
        if gone:
            self._reheap()

    async def run(self) -> None:
        """Deliver pushes as they fall due until cancelled."""
        next_poll = self.clock()
        try:
            while True:
                now = self.clock()
                docs: dict[str, StoredPass] = {}
                later: list[tuple[str, StoredPass]] = []
                while self._due and self._due[0][0] <= now:
                    serial = heapq.heappop(self._due)[1]
                    doc = self._queued.pop(serial)[1]
                    if serial in self._busy:
                        later.append((serial, doc))
                    else:
                        docs[serial] = doc
                for serial, doc in later:
                    # Room is left: each was taken off the queue just now.
                    self._queued[serial] = (now + BUSY_RETRY, doc)
                    heapq.heappush(self._due, (now + BUSY_RETRY, serial))
                PUSH_QUEUE.set(len(self._queued))
                if docs:
                    await self._start_round(self._push(list(docs.values())))
                if now >= next_poll:
                    next_poll = now + timedelta(seconds=POLL_S)
                    await self._poll(now)
                await self._sleep(next_poll)
        finally:
            for task in self._in_flight:
                task.cancel()

    async def _poll(self, now: datetime) -> None:
        try:
            due = await self.store.due_pushes(now - GRACE, BATCH)
        except Exception:
            log.exception("looking for due pushes failed; retrying")
            return
        if due:
            await self._start_round(self.deliver([d["_id"] for d in due], now - GRACE))

    async def _sleep(self, next_poll: datetime) -> None:
        self._wake.clear()
        until = min(self._due[0][0], next_poll) if self._due else next_poll
        wait = (until - self.clock()).total_seconds()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _start_round(self, work: Coroutine[Any, Any, int]) -> None:
        await self._rounds.acquire()
        task = asyncio.create_task(self._round(work))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _round(self, work: Coroutine[Any, Any, int]) -> None:
        try:
            await work
        except Exception:
            # The lease makes the next poll try again.
            log.exception("push delivery failed; retrying after the lease")
        finally:
            self._rounds.release()

    async def deliver(self, serial_numbers: Sequence[str], now: datetime | None) -> int:
        """Claim these passes' due pushes (all of them when ``now`` is None) and deliver
        them; returns how many passes went out."""
        lease_until = (now or self.clock()) + LEASE
        claimed = await self.store.claim_pushes(serial_numbers, now, lease_until)
        self._forget(claimed)
        return await self._push(claimed)

    async def _push(self, claimed: list[StoredPass]) -> int:
        """Push these passes as they are given (those already being pushed are left to
        the store poll, which finds them still due)."""
        claimed = [d for d in claimed if d["_id"] not in self._busy and not self._was_sent(d)]
        if not claimed:
            return 0
        serials = {d["_id"] for d in claimed}
        self._busy |= serials
        try:
            registrations = await self.store.registrations_by_serial(
                [d["_id"] for d in claimed if d.get("platform") != GOOGLE]
            )
            await asyncio.gather(
                *(self._deliver(doc, registrations.get(doc["_id"], [])) for doc in claimed)
            )
        finally:
            self._busy -= serials
        return len(claimed)

    async def flush(self, serial_numbers: Sequence[str]) -> None:
        """Deliver these passes now, due or not."""
        if serial_numbers:
            await self.deliver(serial_numbers, None)

    async def _deliver(self, doc: StoredPass, registrations: list[Registration]) -> None:
        try:
            if doc.get("platform") == GOOGLE:
                # What Google was last told is read fresh: the pass in hand may predate it.
                fresh = await self.store.get_pass(doc["_id"])
                if fresh is None:
                    return
                doc = fresh
                done, pushed = await self._google(doc)
                sent = self.google is not None
            else:
                (done, sent), pushed = await self._apple(doc, registrations), {}
        except Exception:
            log.exception("push failed", extra={"fields": {"serial_number": doc["_id"]}})
            return
        if done:
            await self.store.pushed(doc["_id"], doc["update_seq"], pushed)
            self._remember(doc)
        if sent:
            await self._announce(doc)

    def _was_sent(self, doc: Mapping[str, Any]) -> bool:
        """This version of the pass was pushed already (its pending push then is cleared:
        the push recorded it before it was remembered here)."""
        return self._sent.get(doc["_id"], -1) >= _seq(doc)

    def _remember(self, doc: Mapping[str, Any]) -> None:
        self._sent[doc["_id"]] = max(_seq(doc), self._sent.pop(doc["_id"], -1))
        while len(self._sent) > self.max_queued:
            self._sent.popitem(last=False)

    async def _announce(self, doc: StoredPass) -> None:
        """Tell the pushed listener; the push itself stands whatever becomes of this."""
        if self.pushed is None:
            return
        try:
            await self.pushed(doc)
        except Exception:
            log.exception(
                "announcing a pushed pass failed", extra={"fields": {"serial_number": doc["_id"]}}
            )

    async def _apple(self, doc: StoredPass, registrations: list[Registration]) -> tuple[bool, bool]:
        """Whether every device was handled, and whether a push reached at least one."""
        if not registrations or self.apns is None:
            return True, False
        results = await self.apns.push_many(
            [(r["push_token"], doc["pass_type_id"]) for r in registrations]
        )
        all_done = True
        for registration, result in zip(registrations, results, strict=True):
            PUSHES.labels(APPLE, _APNS_OUTCOMES[result.outcome]).inc()
            if result.outcome is PushOutcome.UNREGISTERED:
                await self._gone(doc, registration, "apns_unregistered")
            elif result.outcome is PushOutcome.FAILED:
                all_done = False
        return all_done, any(r.outcome is PushOutcome.DELIVERED for r in results)

    async def _gone(self, doc: StoredPass, registration: Mapping[str, Any], reason: str) -> None:
        key = registration_id(
            registration["device_id"], registration["pass_type_id"], registration["serial_number"]
        )
        if await self.store.delete_registration(key) and self.removed is not None:
            await self.removed(doc, registration["device_id"], reason)

    async def _google(self, doc: StoredPass) -> tuple[bool, dict[str, Any]]:
        if self.google is None:
            return True, {}
        try:
            synced = await self.google.sync(doc)
        except Exception:
            PUSHES.labels(GOOGLE, "failed").inc()
            raise
        PUSHES.labels(GOOGLE, "sent").inc()
        return True, {"google": synced}


def _seq(doc: Mapping[str, Any]) -> int:
    """A pass's update sequence: the higher, the newer its content."""
    return int(doc.get("update_seq", 0))
