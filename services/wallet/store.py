"""MongoDB persistence of the wallet (database ``<prefix>_wallet``).

- ``passes``: one document per pass, keyed by serial number: customer, kind, platform, pass
  type id, authentication token, template, field values, voided, ``updated_at`` (whole
  seconds, at least one second after the previous change so no phone gets a wrong 304) and
  ``update_seq`` (a global sequence: the "passes updated since" tag phones send back).
- ``registrations``: one document per (device, pass type, serial) with the push token.
- ``counters``: the update sequence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.platform.mongo import Document, IndexSpec, ensure_indexes

_SEQUENCE = "pass_updates"


def registration_id(device_id: str, pass_type_id: str, serial_number: str) -> str:
    """The key of one registration document."""
    return f"{device_id}:{pass_type_id}:{serial_number}"


def next_update_time(previous: datetime | None, now: datetime) -> datetime:
    """``now`` in whole seconds, and at least one second after ``previous``
    (HTTP dates have one-second resolution)."""
    at = now.astimezone(UTC).replace(microsecond=0)
    if previous is not None and at < previous + timedelta(seconds=1):
        return previous.astimezone(UTC) + timedelta(seconds=1)
    return at


class WalletStore:
    """Passes and device registrations."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.db = db
        self.passes = db["passes"]
        self.registrations = db["registrations"]
        self.counters = db["counters"]

    async def ensure_indexes(self) -> None:
        """Passes by customer; registrations by device and pass type, and by pass."""
        await ensure_indexes(
            self.db,
            [
                IndexSpec("passes", [("customer_id", 1)]),
                IndexSpec("registrations", [("device_id", 1), ("pass_type_id", 1)]),
                IndexSpec("registrations", [("serial_number", 1)]),
            ],
        )

    async def _next_seq(self) -> int:
        counter = await self.counters.find_one_and_update(
            {"_id": _SEQUENCE},
            {"$inc": {"seq": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(counter["seq"])

    async def insert_pass(self, doc: Mapping[str, Any], now: datetime) -> Document:
        """Store a new pass; its ``updated_at`` and ``update_seq`` are set here."""
        stored = {
            **doc,
            # MongoDB keeps milliseconds; the returned document says what a re-read will.
            "created_at": now.replace(microsecond=now.microsecond // 1000 * 1000),
            "updated_at": next_update_time(None, now),
            "update_seq": await self._next_seq(),
        }
        await self.passes.insert_one(stored)
        return stored

    async def get_pass(self, serial_number: str) -> Document | None:
        """One pass, or None."""
        return await self.passes.find_one({"_id": serial_number})

    async def passes_of(self, customer_ids: Sequence[str]) -> list[Document]:
        """Every pass of these customers, oldest first."""
        cursor = self.passes.find({"customer_id": {"$in": list(customer_ids)}})
        docs = await cursor.to_list(None)
        return sorted(docs, key=lambda d: (d["created_at"], d["_id"]))

    async def change_pass(
        self, serial_number: str, changes: Mapping[str, Any], now: datetime
    ) -> Document | None:
        """Apply ``changes`` and move the pass's update time and sequence on; None when the
        pass does not exist. Concurrent changes retry so update times stay strictly apart."""
        while True:
            current = await self.get_pass(serial_number)
            if current is None:
                return None
            updated_at = next_update_time(current["updated_at"], now)
            result = await self.passes.find_one_and_update(
                {"_id": serial_number, "update_seq": current["update_seq"]},
                {
                    "$set": {
                        **changes,
                        "updated_at": updated_at,
                        "update_seq": await self._next_seq(),
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
            if result is not None:
                return result

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

    async def registrations_of(self, serial_number: str) -> list[Document]:
        """The devices registered for a pass."""
        return await self.registrations.find({"serial_number": serial_number}).to_list(None)

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
