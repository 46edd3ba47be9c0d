"""The status of platform-wide privacy requests (erase or export one customer).

The profile process keeps one record per request: when it was asked, which services must
answer, and each answer as it arrives on ``privacy.completed``. A request is done when every
expected service has answered. Records hold no customer id, so an erased customer leaves no
trace here; exports are stored encrypted until the record expires.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from lodestar.v1 import events_pb2, privacy_pb2
from services.platform.bus import Delivery
from services.platform.crypto import EncryptedValue, FieldCipher
from services.platform.errors import NotFound, PoisonMessage
from services.platform.mongo import Document, IndexSpec, ensure_indexes
from services.platform.rotation import Tally
from services.profile.store import rotate_values

PENDING = privacy_pb2.PRIVACY_REQUEST_STATE_PENDING
DONE = privacy_pb2.PRIVACY_REQUEST_STATE_DONE
KINDS = (events_pb2.PRIVACY_REQUEST_KIND_ERASE, events_pb2.PRIVACY_REQUEST_KIND_EXPORT)
_EXPORT_CONTEXT = "privacy-export"


@dataclass(frozen=True)
class PrivacyRequestSettings:
    """Which services must answer before a request is done, and how long records stay."""

    services: tuple[str, ...] = ("identity", "profile")
    ttl_s: int = 30 * 24 * 3600


class PrivacyRequests:
    """Request records in the profile database's ``privacy_requests`` collection."""

    def __init__(
        self,
        db: AsyncIOMotorDatabase[Document],
        cipher: FieldCipher,
        settings: PrivacyRequestSettings | None = None,
    ) -> None:
        self.requests = db["privacy_requests"]
        self.db = db
        self.cipher = cipher
        self.settings = settings or PrivacyRequestSettings()

    async def ensure_indexes(self) -> None:
        """Records expire after the configured time."""
        await ensure_indexes(
            self.db,
            [
                IndexSpec(
                    "privacy_requests",
                    [("requested_at", 1)],
                    options={"expireAfterSeconds": self.settings.ttl_s},
                )
            ],
        )

    async def rotate_keys(self, *, check_only: bool = False) -> Tally:
        """Re-encrypt every stored export still under an old key with the active key, then
        count what is left (see :func:`services.profile.store.rotate_values`)."""
        return await rotate_values(
            self.requests,
            Tally("profile", "privacy_requests"),
            self.cipher,
            _exports,
            check_only=check_only,
            field="answers",
        )

    async def open(self, request_id: str, kind: int, at: datetime) -> None:
        """Record a new request as pending for every expected service (a no-op if known)."""
        with contextlib.suppress(DuplicateKeyError):
            await self.requests.insert_one(
                {
                    "_id": request_id,
                    "kind": kind,
                    "requested_at": at,
                    "expected": list(self.settings.services),
                    "answers": {},
                }
            )

    async def answer(self, completed: events_pb2.PrivacyCompleted) -> None:
        """Record one service's answer; a redelivered answer rewrites the same values. An
        answer for a request submitted elsewhere (straight onto the topic) opens its record."""
        at = completed.completed_at.ToDatetime(UTC) if completed.HasField("completed_at") else None
        answer: Document = {"completed_at": at or datetime.now(UTC)}
        if completed.HasField("export"):
            data = json.dumps(MessageToDict(completed.export))
            answer["export"] = self.cipher.encrypt(data, _EXPORT_CONTEXT).to_document()
        await self.requests.update_one(
            {"_id": completed.request_id},
            {
                "$set": {f"answers.{completed.service}": answer},
                "$setOnInsert": {
                    "kind": completed.kind,
                    "requested_at": answer["completed_at"],
                    "expected": list(self.settings.services),
                },
            },
            upsert=True,
        )

    async def status(self, request_id: str) -> privacy_pb2.PrivacyRequestStatus:
        """Where the request stands; exports decrypted once every service has answered."""
        doc = await self.requests.find_one({"_id": request_id})
        if doc is None:
            raise NotFound(f"privacy request {request_id!r} is unknown or expired")
        return self._status(doc)

    def _status(self, doc: Document) -> privacy_pb2.PrivacyRequestStatus:
        answers: dict[str, Document] = doc.get("answers") or {}
        names = list(doc.get("expected") or []) + sorted(set(answers) - set(doc["expected"]))
        services = [
            privacy_pb2.ServicePrivacyStatus(
                service=name,
                state=DONE if name in answers else PENDING,
                completed_at=_stamp(answers[name]["completed_at"]) if name in answers else None,
            )
            for name in names
        ]
        done = all(name in answers for name in doc["expected"])
        status = privacy_pb2.PrivacyRequestStatus(
            request_id=doc["_id"],
            kind=doc["kind"],
            state=DONE if done else PENDING,
            services=services,
            requested_at=_stamp(doc["requested_at"]),
        )
        if done and doc["expected"]:
            status.completed_at.CopyFrom(
                _stamp(max(answers[n]["completed_at"] for n in doc["expected"]))
            )
        if done and doc["kind"] == events_pb2.PRIVACY_REQUEST_KIND_EXPORT:
            export: dict[str, Any] = {}
            for name, answer in sorted(answers.items()):
                if "export" in answer:
                    clear = self.cipher.decrypt(
                        EncryptedValue.from_document(answer["export"]), _EXPORT_CONTEXT
                    )
                    export[name] = json.loads(clear)
            status.export.update(export)
        return status


def _exports(doc: Document) -> Iterable[tuple[str, object, str]]:
    for service, answer in (doc.get("answers") or {}).items():
        if isinstance(answer, Mapping) and "export" in answer:
            yield f"answers.{service}.export", answer["export"], _EXPORT_CONTEXT


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    return stamp


class CompletionHandler:
    """Records answers from ``privacy.completed``."""

    def __init__(self, requests: PrivacyRequests) -> None:
        self.requests = requests

    async def __call__(self, batch: Sequence[Delivery[events_pb2.PrivacyCompleted]]) -> None:
        """Record each answer (idempotent)."""
        for delivery in batch:
            completed = delivery.message
            if not completed.request_id or not completed.service:
                raise PoisonMessage("privacy completion without request_id or service")
            await self.requests.answer(completed)
