"""MongoDB persistence of the wallet (database ``<prefix>_wallet``).

- ``passes``: one document per pass, keyed by serial number: customer, kind, platform, pass
  type id, authentication token, template, field values, voided, ``updated_at`` (whole
  seconds, at least one second after the previous change so no phone gets a wrong 304) and
  ``update_seq`` (a global sequence: the "passes updated since" tag phones send back).
  A change that phones must hear about also sets ``push_due`` (the earliest time the
  dispatcher pushes it; later changes keep the earlier time, so a burst gives one push).
- ``registrations``: one document per (device, pass type, serial) with the push token.
- ``customers``: per customer, the ``wallet_marketing`` consent and when marketing messages
  were last shown (the frequency cap).
- ``offers``: offers bound to segments.
- ``counters``: the update sequence.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, cast

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from services.platform.errors import Unavailable
from services.platform.mongo import Document, IndexSpec, ensure_indexes
from services.wallet.records import (
    CustomerRecord,
    NewPass,
    PassChanges,
    Registration,
    StoredOffer,
    StoredPass,
    registration_id,
)

_SEQUENCE = "pass_updates"
# How often taking sequence numbers is asked again when the reply holds no counter.
_SEQ_ATTEMPTS = 5
MARKETING_WINDOW = timedelta(days=1)
# Ids per ``$in`` read: the server re-checks each document against the whole list, so long
# lists cost more per document; chunks are read side by side.
IN_CHUNK = 100


def chunks(ids: Sequence[str], size: int = IN_CHUNK) -> list[list[str]]:
    """``ids`` in lists of at most ``size``."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


class _SeqBatch(TypedDict):
    count: int
    done: asyncio.Future[int]


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def next_update_time(previous: datetime | None, now: datetime) -> datetime:
    """``now`` in whole seconds, and at least one second after ``previous``
    (HTTP dates have one-second resolution)."""
    at = now.astimezone(UTC).replace(microsecond=0)
    if previous is not None and at < previous + timedelta(seconds=1):
        return previous.astimezone(UTC) + timedelta(seconds=1)
    return at


def _as_changed(current: StoredPass, values: PassChanges, push_at: datetime) -> StoredPass:
    """The pass as the server holds it after ``$set`` of ``values`` (dotted keys) and
    ``$min`` of ``push_due`` (datetimes kept to the millisecond, as stored)."""
    doc: Document = copy.deepcopy(dict(current))
    for key, value in values.items():
        *parents, last = key.split(".")
        target = doc
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    due = push_at.replace(microsecond=push_at.microsecond // 1000 * 1000)
    pending = doc.get("push_due")
    doc["push_due"] = due if pending is None or _aware(pending) > due else pending
    return cast(StoredPass, doc)


class WalletStore:
    """Passes and device registrations."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.db = db
        self.passes = db["passes"]
        self.registrations = db["registrations"]
        self.counters = db["counters"]
        self._seq_batch: _SeqBatch | None = None
        self._seq_tasks: set[asyncio.Task[None]] = set()
        self.customers = db["customers"]
        self.offers = db["offers"]

    async def ensure_indexes(self) -> None:
        """Passes by customer; registrations by device and pass type, and by pass."""
        await ensure_indexes(
            self.db,
            [
                IndexSpec("passes", [("customer_id", 1)]),
                IndexSpec("registrations", [("device_id", 1), ("pass_type_id", 1)]),
                IndexSpec("registrations", [("serial_number", 1)]),
                IndexSpec("passes", [("push_due", 1)], options={"sparse": True}),
                IndexSpec("passes", [("reminder_due", 1)], options={"sparse": True}),
                IndexSpec("offers", [("segment_id", 1)]),
            ],
        )

    async def _next_seq(self) -> int:
        """The next update sequence number. Callers waiting at the same moment share one
        round trip (one ``$inc`` by their number), so concurrent changes do not queue on
        the counter; each still gets a fresh, unique number."""
        if self._seq_batch is None:
            batch: _SeqBatch = {"count": 0, "done": asyncio.get_running_loop().create_future()}
            self._seq_batch = batch
            # The round trip starts once every caller of this moment has joined.
            task = asyncio.get_running_loop().create_task(self._take_seqs(batch))
            self._seq_tasks.add(task)
            task.add_done_callback(self._seq_tasks.discard)
        batch = self._seq_batch
        position = batch["count"]
        batch["count"] += 1
        last: int = await asyncio.shield(batch["done"])
        return last - batch["count"] + position + 1

    async def _take_seqs(self, batch: _SeqBatch) -> None:
        self._seq_batch = None
        try:
            last = await self.take_seqs(batch["count"])
        except BaseException as exc:
            # Every caller of the batch hears of it: none waits for ever.
            batch["done"].set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            batch["done"].set_result(last)

    async def take_seqs(self, count: int) -> int:
        """Take ``count`` update sequence numbers in one round trip; returns the last. A
        reply without the counter (the local server's answer to a first upsert racing
        another; a duplicate key on MongoDB) is asked again: numbers are only ever unique,
        never reused."""
        for _ in range(_SEQ_ATTEMPTS):
            try:
                counter = await self.counters.find_one_and_update(
                    {"_id": _SEQUENCE},
                    {"$inc": {"seq": count}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                continue
            if counter is not None:
                return int(counter["seq"])
        raise Unavailable(f"the update sequence gave no number in {_SEQ_ATTEMPTS} attempts")

    async def insert_pass(self, doc: NewPass, now: datetime) -> StoredPass:
        """Store a new pass; its ``updated_at`` and ``update_seq`` are set here."""
        stored: Document = {
            **doc,
            # MongoDB keeps milliseconds; the returned document says what a re-read will.
            "created_at": now.replace(microsecond=now.microsecond // 1000 * 1000),
            "updated_at": next_update_time(None, now),
            "update_seq": await self._next_seq(),
        }
        await self.passes.insert_one(stored)
        return cast(StoredPass, stored)

    async def get_pass(self, serial_number: str) -> StoredPass | None:
        """One pass, or None."""
        return cast(StoredPass | None, await self.passes.find_one({"_id": serial_number}))

    async def passes_of(self, customer_ids: Sequence[str]) -> list[StoredPass]:
        """Every pass of these customers, oldest first."""
        cursor = self.passes.find({"customer_id": {"$in": list(customer_ids)}})
        docs = cast(list[StoredPass], await cursor.to_list(None))
        return sorted(docs, key=lambda d: (d["created_at"], d["_id"]))

    async def change_pass(
        self,
        serial_number: str,
        changes: PassChanges,
        now: datetime,
        push_at: datetime | None = None,
        current: StoredPass | None = None,
    ) -> StoredPass | None:
        """Apply ``changes`` and move the pass's update time and sequence on; None when the
        pass does not exist. ``push_at`` schedules a push (an earlier pending one is kept).
        ``current`` saves a read when the caller has the pass. Concurrent changes retry so
        update times stay strictly apart."""
        while True:
            if current is None:
                current = await self.get_pass(serial_number)
                if current is None:
                    return None
            update: dict[str, Any] = {
                "$set": {
                    **changes,
                    "updated_at": next_update_time(current["updated_at"], now),
                    "update_seq": await self._next_seq(),
                }
            }
            if push_at is not None:
                update["$min"] = {"push_due": push_at}
            result = await self.passes.find_one_and_update(
                {"_id": serial_number, "update_seq": current["update_seq"]},
                update,
                return_document=ReturnDocument.AFTER,
            )
            if result is not None:
                return cast(StoredPass, result)
            current = None

    async def change_passes(
        self,
        changes: Sequence[tuple[StoredPass, PassChanges]],
        now: datetime,
        push_at: datetime,
    ) -> list[StoredPass | None]:
        """``change_pass`` for many passes at once: each (pass as read, changes) in one bulk
        write after one sequence round trip; returns each pass as changed. A pass someone
        else changed since it was read is changed again on its own from a fresh read."""
        if not changes:
            return []
        first = await self.take_seqs(len(changes)) - len(changes) + 1
        writes: list[UpdateOne] = []
        results: list[StoredPass] = []
        for n, (current, update) in enumerate(changes):
            values = {
                **update,
                "updated_at": next_update_time(current["updated_at"], now),
                "update_seq": first + n,
            }
            writes.append(
                UpdateOne(
                    {"_id": current["_id"], "update_seq": current["update_seq"]},
                    {"$set": values, "$min": {"push_due": push_at}},
                )
            )
            results.append(_as_changed(current, values, push_at))
        done = await self.passes.bulk_write(writes, ordered=False)
        if done.matched_count == len(writes):
            return list[StoredPass | None](results)
        serials = [current["_id"] for current, _ in changes]
        stored = {
            d["_id"]: d["update_seq"]
            for d in await self.passes.find({"_id": {"$in": serials}}, {"update_seq": 1}).to_list(
                None
            )
        }
        out: list[StoredPass | None] = []
        for n, ((current, update), result) in enumerate(zip(changes, results, strict=True)):
            if stored.get(current["_id"]) == first + n:
                out.append(result)
            else:
                out.append(await self.change_pass(current["_id"], update, now, push_at=push_at))
        return out

    async def live_passes_of(self, customer_id: str) -> list[StoredPass]:
        """The customer's passes that are not voided."""
        docs = await self.passes.find({"customer_id": customer_id, "voided": False}).to_list(None)
        return cast(list[StoredPass], docs)

    async def due_pushes(self, now: datetime, limit: int) -> list[StoredPass]:
        """Passes whose push is due, oldest first."""
        cursor = self.passes.find({"push_due": {"$lte": now}}).sort("push_due", 1).limit(limit)
        return cast(list[StoredPass], await cursor.to_list(None))

    async def claim_pushes(
        self, serial_numbers: Sequence[str], now: datetime | None, lease_until: datetime
    ) -> list[StoredPass]:
        """Take these passes' pushes for delivery in two round trips: those due by ``now``
        (every one named when ``now`` is None) move their due time to ``lease_until``, so
        another replica leaves them and a crash retries them then. Returns the passes this
        call took."""
        claim = uuid.uuid4().hex
        query: dict[str, Any] = {"_id": {"$in": list(serial_numbers)}}
        if now is not None:
            query["push_due"] = {"$lte": now}
        await self.passes.update_many(
            query, {"$set": {"push_due": lease_until, "push_claim": claim}}
        )
        claimed = await self.passes.find(
            {"_id": {"$in": list(serial_numbers)}, "push_claim": claim}
        ).to_list(None)
        return cast(list[StoredPass], claimed)

    async def merge_customers(self, survivor_id: str, merged_ids: Sequence[str]) -> int:
        """Passes of merged customers now belong to the survivor; returns how many moved."""
        result = await self.passes.update_many(
            {"customer_id": {"$in": list(merged_ids)}}, {"$set": {"customer_id": survivor_id}}
        )
        await self.customers.delete_many({"_id": {"$in": list(merged_ids)}})
        return int(result.modified_count)

    async def pushed(self, serial_number: str, update_seq: int, extra: PassChanges) -> None:
        """Record a push of the pass as it was at ``update_seq``: the pending push is cleared
        unless the pass changed meanwhile (then it goes out again)."""
        if extra:
            await self.passes.update_one({"_id": serial_number}, {"$set": dict(extra)})
        await self.passes.update_one(
            {"_id": serial_number, "update_seq": update_seq}, {"$unset": {"push_due": ""}}
        )

    async def due_reminders(self, now: datetime, limit: int) -> list[StoredPass]:
        """Tickets whose reminder is due."""
        cursor = self.passes.find({"reminder_due": {"$lte": now}, "voided": False}).limit(limit)
        return cast(list[StoredPass], await cursor.to_list(None))

    async def delete_registration(self, registration: str) -> bool:
        """Remove one registration by its key; True when it existed."""
        result = await self.registrations.delete_one({"_id": registration})
        return result.deleted_count > 0

    async def delete_registrations_of(self, serial_numbers: Sequence[str]) -> int:
        """Remove every registration of these passes."""
        if not serial_numbers:
            return 0
        result = await self.registrations.delete_many(
            {"serial_number": {"$in": list(serial_numbers)}}
        )
        return int(result.deleted_count)

    async def customer(self, customer_id: str) -> CustomerRecord | None:
        """What the wallet knows of a customer: last loyalty figures, consent, held offers."""
        return cast(CustomerRecord | None, await self.customers.find_one({"_id": customer_id}))

    async def customers_of(self, customer_ids: Sequence[str]) -> dict[str, CustomerRecord]:
        """Those of these customers the wallet knows, by id."""
        parts = await asyncio.gather(
            *(
                self.customers.find({"_id": {"$in": part}}).to_list(None)
                for part in chunks(customer_ids)
            )
        )
        return {d["_id"]: cast(CustomerRecord, d) for part in parts for d in part}

    async def passes_of_live(self, customer_ids: Sequence[str]) -> list[StoredPass]:
        """The passes of these customers that are not voided."""
        parts = await asyncio.gather(
            *(
                self.passes.find({"customer_id": {"$in": part}, "voided": False}).to_list(None)
                for part in chunks(customer_ids)
            )
        )
        return [cast(StoredPass, d) for part in parts for d in part]

    async def remember(self, customer_id: str, changes: CustomerRecord) -> None:
        """Set what the wallet knows of a customer."""
        await self.customers.update_one({"_id": customer_id}, {"$set": dict(changes)}, upsert=True)

    async def remember_many(self, changes: Mapping[str, CustomerRecord]) -> None:
        """Set what the wallet knows of several customers, in one round trip."""
        writes = [
            UpdateOne({"_id": customer_id}, {"$set": dict(values)}, upsert=True)
            for customer_id, values in changes.items()
            if values
        ]
        if writes:
            await self.customers.bulk_write(writes, ordered=False)

    async def set_consent(self, customer_id: str, granted: bool) -> None:
        """Remember the customer's wallet_marketing consent."""
        await self.customers.update_one(
            {"_id": customer_id}, {"$set": {"wallet_marketing": granted}}, upsert=True
        )

    async def take_marketing_slot(self, customer_id: str, now: datetime, cap: int) -> str:
        """Count one marketing message against the cap; returns why it may not be shown
        (``""`` when it may)."""
        while True:
            doc = await self.customers.find_one({"_id": customer_id}) or {}
            if not doc.get("wallet_marketing"):
                return "no wallet_marketing consent"
            sent = list(doc.get("marketing_at", []))
            recent = [at for at in sent if _aware(at) > now - MARKETING_WINDOW]
            if len(recent) >= cap:
                return f"frequency cap reached ({cap} per day)"
            unchanged = {"$eq": sent} if sent else {"$exists": False}
            result = await self.customers.update_one(
                {"_id": customer_id, "marketing_at": unchanged},
                {"$set": {"marketing_at": [*recent, now]}},
            )
            if result.modified_count:
                return ""

    async def put_offer(self, offer: StoredOffer) -> None:
        """Create or replace an offer."""
        await self.offers.replace_one({"_id": offer["_id"]}, dict(offer), upsert=True)

    async def all_offers(self) -> list[StoredOffer]:
        """Every offer, by id."""
        return cast(list[StoredOffer], await self.offers.find({}).sort("_id", 1).to_list(None))

    async def get_offer(self, offer_id: str) -> StoredOffer | None:
        """One offer, or None."""
        return cast(StoredOffer | None, await self.offers.find_one({"_id": offer_id}))

    async def forget_customer(self, customer_id: str) -> None:
        """Drop what the wallet knows about the customer beyond their (voided) passes."""
        await self.customers.delete_one({"_id": customer_id})

    async def register(
        self, device_id: str, pass_type_id: str, serial_number: str, push_token: str, now: datetime
    ) -> bool:
        """Register a device for a pass's updates; True when the registration is new (an
        existing one gets the new push token)."""
        key = registration_id(device_id, pass_type_id, serial_number)
        try:
            await self.registrations.insert_one(
                {
                    "_id": key,
                    "device_id": device_id,
                    "pass_type_id": pass_type_id,
                    "serial_number": serial_number,
                    "push_token": push_token,
                    "created_at": now,
                }
            )
        except DuplicateKeyError:
            await self.registrations.update_one({"_id": key}, {"$set": {"push_token": push_token}})
            return False
        return True

    async def unregister(self, device_id: str, pass_type_id: str, serial_number: str) -> bool:
        """Remove a registration; True when there was one."""
        result = await self.registrations.delete_one(
            {"_id": registration_id(device_id, pass_type_id, serial_number)}
        )
        return result.deleted_count > 0

    async def registrations_of(self, serial_number: str) -> list[Registration]:
        """The devices registered for a pass."""
        found = await self.registrations.find({"serial_number": serial_number}).to_list(None)
        return cast(list[Registration], found)

    async def registrations_by_serial(
        self, serial_numbers: Sequence[str]
    ) -> dict[str, list[Registration]]:
        """The devices registered for each of these passes, in one query."""
        if not serial_numbers:
            return {}
        found: dict[str, list[Registration]] = {}
        cursor = self.registrations.find({"serial_number": {"$in": list(serial_numbers)}})
        for doc in await cursor.to_list(None):
            found.setdefault(doc["serial_number"], []).append(cast(Registration, doc))
        return found

    async def updated_since(
        self, device_id: str, pass_type_id: str, since_seq: int | None
    ) -> tuple[list[str], int]:
        """Serial numbers of the device's passes of this type changed after ``since_seq``
        (all of them when None), and the highest sequence among them."""
        registered = await self.registrations.find(
            {"device_id": device_id, "pass_type_id": pass_type_id}
        ).to_list(None)
        serials = [r["serial_number"] for r in registered]
        if not serials:
            return [], 0
        query: dict[str, Any] = {"_id": {"$in": serials}, "pass_type_id": pass_type_id}
        if since_seq is not None:
            query["update_seq"] = {"$gt": since_seq}
        docs = await self.passes.find(query).to_list(None)
        return sorted(d["_id"] for d in docs), max((int(d["update_seq"]) for d in docs), default=0)
