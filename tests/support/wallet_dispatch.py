"""What the push dispatcher's tests share: a clock that can be moved on, ``until``, the real
wallet store with a gate on its claim's answer (the store's own rules, slowed where a test
needs to interleave), and small stand-ins for APNs and Google (remote services)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from services.platform.mongo import Document
from services.wallet.delivery import Dispatcher
from services.wallet.passes import APPLE
from services.wallet.pushes import PushOutcome, PushResult
from services.wallet.records import GoogleIds, NewPass, StoredPass
from services.wallet.store import WalletStore
from tests.support.kafka import unique

PASS_TYPE = "pass.com.example.lodestar.dispatch"


class Clock:
    """The real time, moved on by ``ahead`` (to make stored pushes overdue without waiting)."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 60.0
) -> None:
    """Wait (yielding) until ``check`` holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        await asyncio.sleep(0.02)


class GatedStore(WalletStore):
    """The wallet store, counting its polls and claims; a claim's answer (taken by the real
    store) waits for ``claim_gate``, as a slow round trip would."""

    def __init__(self, db: AsyncIOMotorDatabase[Document], *, claim_open: bool = True) -> None:
        super().__init__(db)
        self.polls = 0
        self.claims = 0
        self.claiming = asyncio.Event()
        self.claim_gate = asyncio.Event()
        if claim_open:
            self.claim_gate.set()

    async def due_pushes(self, now: datetime, limit: int) -> list[StoredPass]:
        """The store's due pushes, counted as one poll."""
        found = await super().due_pushes(now, limit)
        self.polls += 1
        return found

    async def claim_pushes(
        self, serial_numbers: Sequence[str], now: datetime | None, lease_until: datetime
    ) -> list[StoredPass]:
        """The store's claim, answered once ``claim_gate`` is set."""
        found = await super().claim_pushes(serial_numbers, now, lease_until)
        self.claims += 1
        self.claiming.set()
        await self.claim_gate.wait()
        return found

    async def push_cleared(self, serial_number: str) -> bool:
        """Whether the pass has no push pending (no ``push_due`` stored)."""
        doc = await self.get_pass(serial_number)
        return doc is not None and "push_due" not in doc

    async def pending_of(self, serial_numbers: Sequence[str]) -> list[str]:
        """Those of these passes with a push pending, however far ahead it is due."""
        wanted = set(serial_numbers)
        # The store's own read, not counted as a poll of the dispatcher.
        due = await super().due_pushes(datetime.now(UTC) + timedelta(days=1), len(wanted) + 100)
        return sorted(d["_id"] for d in due if d["_id"] in wanted)


async def gated_store(
    client: AsyncIOMotorClient[Document], *, claim_open: bool = True
) -> GatedStore:
    """A :class:`GatedStore` on a database of its own, its indexes made."""
    store = GatedStore(client[unique("wallet-dispatch")], claim_open=claim_open)
    await store.ensure_indexes()
    return store


def new_pass(serial: str, platform: str = APPLE) -> NewPass:
    """A loyalty card with ``points`` (the content the tests change)."""
    return {
        "_id": serial,
        "customer_id": f"customer-{serial}",
        "kind": "storeCard",
        "platform": platform,
        "pass_type_id": PASS_TYPE,
        "authentication_token": f"token-of-{serial}",
        "template": "loyalty",
        "fields": {"points": 0},
        "voided": False,
    }


async def add_passes(
    store: WalletStore, serials: Sequence[str], now: datetime, platform: str = APPLE
) -> list[StoredPass]:
    """Issue these passes; an Apple pass gets one registered device (token ``push-<serial>``)."""
    docs = await asyncio.gather(*(store.insert_pass(new_pass(s, platform), now) for s in serials))
    if platform == APPLE:
        await asyncio.gather(
            *(store.register(f"device-{s}", PASS_TYPE, s, f"push-{s}", now) for s in serials)
        )
    return list(docs)


async def change_and_schedule(
    store: WalletStore,
    dispatcher: Dispatcher,
    serial: str,
    new_points: int,
    now: datetime,
    current: StoredPass | None = None,
) -> StoredPass:
    """Change a pass's points through the store (its push due now) and hand the change to
    the dispatcher, as the live updates do; the pass as changed."""
    changed = await store.change_pass(
        serial, {"fields.points": new_points}, now, push_at=now, current=current
    )
    assert changed is not None, f"{serial} is not stored"
    dispatcher.schedule(now, changed)
    return changed


def points(doc: StoredPass) -> int:
    """The pass's content as the tests change it."""
    return int(doc["fields"]["points"])


class GatedApns:
    """Answers every push 200, but only once ``answer`` is set; counts the rounds waiting
    for it and the pushes (one per device) answered."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.waiting = 0
        self.pushes = 0

    async def push_many(self, targets: Sequence[tuple[str, str]]) -> list[PushResult]:
        """One delivered result per target, once answered."""
        self.waiting += 1
        await self.answer.wait()
        self.pushes += len(targets)
        return [PushResult(PushOutcome.DELIVERED, 200, "", "id", 1) for _ in targets]


class GatedGoogle:
    """Patches once ``answer`` is set; records the version of every sync begun and the most
    syncs in flight at once."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.synced: list[int] = []
        self.in_flight = 0
        self.most_at_once = 0

    async def sync(self, doc: StoredPass) -> GoogleIds:
        """Record the version, wait for the answer, return the object's ids."""
        self.synced.append(int(doc["update_seq"]))
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            await self.answer.wait()
        finally:
            self.in_flight -= 1
        return {
            "resource": "loyalty",
            "class_id": "issuer.loyalty",
            "object_id": f"issuer.object-{doc['_id']}",
            "pushed": {},
        }
