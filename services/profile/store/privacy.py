"""MongoDB persistence of privacy request records (``privacy_requests`` in the profile
database): one document per request, its answers by service, exports encrypted at rest and
the whole record expiring after the configured time."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from services.platform.crypto import EncryptedValue, FieldCipher
from services.platform.mongo import Document, IndexSpec, ensure_indexes
from services.platform.rotation import Tally
from services.profile.privacy_requests import (
    Kind,
    PrivacyAnswer,
    PrivacyRequestSettings,
    StoredAnswer,
    StoredPrivacyRequest,
)
from services.profile.records import JsonObject
from services.profile.store import rotate_values

_EXPORT_CONTEXT = "privacy-export"


@dataclass(frozen=True)
class _Sealed:
    """An encrypted export, decrypted only when revealed."""

    cipher: FieldCipher
    stored: Document

    def reveal(self) -> JsonObject:
        """The export in clear."""
        clear = self.cipher.decrypt(EncryptedValue.from_document(self.stored), _EXPORT_CONTEXT)
        # Written by :meth:`PrivacyRequestStore.answer` from a mapping: a JSON object.
        return cast(JsonObject, json.loads(clear))


class PrivacyRequestStore:
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

    async def open(
        self, request_id: str, kind: Kind, at: datetime, expected: tuple[str, ...]
    ) -> None:
        """Record a new request as pending for ``expected`` (a no-op if known)."""
        with contextlib.suppress(DuplicateKeyError):
            await self.requests.insert_one(
                {
                    "_id": request_id,
                    "kind": kind,
                    "requested_at": at,
                    "expected": list(expected),
                    "answers": {},
                }
            )

    async def answer(self, answer: PrivacyAnswer, expected: tuple[str, ...]) -> None:
        """Record one service's answer (its export encrypted); an unknown request is opened
        with ``expected``."""
        stored: Document = {"completed_at": answer.completed_at}
        if answer.export is not None:
            data = json.dumps(dict(answer.export))
            stored["export"] = self.cipher.encrypt(data, _EXPORT_CONTEXT).to_document()
        await self.requests.update_one(
            {"_id": answer.request_id},
            {
                "$set": {f"answers.{answer.service}": stored},
                "$setOnInsert": {
                    "kind": answer.kind,
                    "requested_at": answer.completed_at,
                    "expected": list(expected),
                },
            },
            upsert=True,
        )

    async def get(self, request_id: str) -> StoredPrivacyRequest | None:
        """The record of ``request_id``, or ``None`` when unknown or expired."""
        doc = await self.requests.find_one({"_id": request_id})
        if doc is None:
            return None
        answers: dict[str, Document] = doc.get("answers") or {}
        return StoredPrivacyRequest(
            request_id=str(doc["_id"]),
            kind=doc["kind"],
            requested_at=_aware(doc["requested_at"]),
            expected=tuple(doc.get("expected") or ()),
            answers={
                name: StoredAnswer(
                    _aware(answer["completed_at"]),
                    _Sealed(self.cipher, answer["export"]) if "export" in answer else None,
                )
                for name, answer in answers.items()
            },
        )


def _aware(at: datetime) -> datetime:
    # MongoDB hands datetimes back naive (UTC).
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _exports(doc: Document) -> Iterable[tuple[str, object, str]]:
    for service, answer in (doc.get("answers") or {}).items():
        if isinstance(answer, Mapping) and "export" in answer:
            yield f"answers.{service}.export", answer["export"], _EXPORT_CONTEXT
