"""Delivery of pass changes to phones.

A change stores the pass and its ``push_due`` time in one write; this loop finds due passes,
claims each for a lease (so replicas do not push the same change twice, and a crash retries
after the lease), and then:

- Apple: one APNs push (empty body, topic = pass type id) to every registered device; the
  phone then fetches the pass from the PassKit web service. APNs 410 deletes the
  registration and reports the pass removed.
- Google: patches the object (``NOTIFY_ON_UPDATE``) and adds a ``TEXT_AND_NOTIFY`` message
  for every announced field change, the same texts Apple shows on the lock screen.

The pending push is cleared only when the pass did not change meanwhile; otherwise it goes
out again. Many changes before the push leave with it: that is the coalescing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.platform.mongo import Document
from services.wallet.apns import ApnsClient, PushOutcome
from services.wallet.passes import GOOGLE
from services.wallet.store import WalletStore, registration_id

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)
BATCH = 200
IDLE_POLL_S = 1.0


class GoogleSync(Protocol):
    """Brings a Google object up to date with the stored pass; returns what to remember
    as pushed (the field values messages were derived from)."""

    async def sync(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Patch the object and send its messages."""
        ...


Removed = Callable[[Mapping[str, Any], str, str], Awaitable[object]]


class Dispatcher:
    """Pushes pass changes when they are due."""

    def __init__(
        self,
        store: WalletStore,
        apns: ApnsClient | None,
        google: GoogleSync | None = None,
        removed: Removed | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.apns = apns
        self.google = google
        self.removed = removed
        self.clock = clock
        self._wake = asyncio.Event()
        self._next: datetime | None = None

    def schedule(self, due: datetime) -> None:
        """A push is due at ``due`` (called by every change in this process)."""
        if self._next is None or due < self._next:
            self._next = due
        self._wake.set()

    async def run(self) -> None:
        """Deliver due pushes until cancelled; idle, it sleeps until the next due push or
        polls for pushes scheduled by other replicas."""
        while True:
            try:
                delivered = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("push delivery failed; retrying")
                delivered = 0
                await asyncio.sleep(IDLE_POLL_S)
            if delivered:
                continue
            await self._sleep()

    async def _sleep(self) -> None:
        self._wake.clear()
        now = self.clock()
        due = self._next or await self.store.next_push_due()
        self._next = None
        wait = IDLE_POLL_S if due is None else (due - now).total_seconds()
        if wait <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=min(wait, IDLE_POLL_S))

    async def deliver_due(self) -> int:
        """Claim and deliver the pushes due now; returns how many passes went out."""
        now = self.clock()
        claimed = []
        for doc in await self.store.due_pushes(now, BATCH):
            got = await self.store.claim_push(doc["_id"], doc["push_due"], now + LEASE)
            if got is not None:
                claimed.append(got)
        if claimed:
            await asyncio.gather(*(self._deliver(doc) for doc in claimed))
        return len(claimed)

    async def flush(self, serial_numbers: Sequence[str]) -> None:
        """Deliver these passes now, due or not."""
        for serial in serial_numbers:
            doc = await self.store.get_pass(serial)
            if doc is not None:
                await self._deliver(doc)

    async def _deliver(self, doc: Document) -> None:
        try:
            if doc.get("platform") == GOOGLE:
                done, pushed = await self._google(doc)
            else:
                done, pushed = await self._apple(doc), {}
        except Exception:
            log.exception("push failed", extra={"fields": {"serial_number": doc["_id"]}})
            return
        if done:
            await self.store.pushed(doc["_id"], doc["update_seq"], pushed)

    async def _apple(self, doc: Document) -> bool:
        registrations = await self.store.registrations_of(doc["_id"])
        if not registrations or self.apns is None:
            return True
        results = await self.apns.push_many(
            [(r["push_token"], doc["pass_type_id"]) for r in registrations]
        )
        all_done = True
        for registration, result in zip(registrations, results, strict=True):
            if result.outcome is PushOutcome.UNREGISTERED:
                await self._gone(doc, registration, "apns_unregistered")
            elif result.outcome is PushOutcome.FAILED:
                all_done = False
        return all_done

    async def _gone(self, doc: Document, registration: Mapping[str, Any], reason: str) -> None:
        key = registration_id(
            registration["device_id"], registration["pass_type_id"], registration["serial_number"]
        )
        if await self.store.delete_registration(key) and self.removed is not None:
            await self.removed(doc, registration["device_id"], reason)

    async def _google(self, doc: Document) -> tuple[bool, dict[str, Any]]:
        if self.google is None:
            return True, {}
        return True, {"google": await self.google.sync(doc)}
