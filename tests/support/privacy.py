"""Privacy request records as the wire sees them: answers go in as ``privacy.completed``
messages (through the consumer's translation) and statuses come back as the gRPC status."""

from __future__ import annotations

from datetime import datetime

from motor.motor_asyncio import AsyncIOMotorDatabase

from lodestar.v1 import events_pb2, privacy_pb2
from services.platform.crypto import FieldCipher
from services.platform.mongo import Document
from services.platform.rotation import Tally
from services.profile.api import status_proto
from services.profile.consumers import privacy_answer
from services.profile.privacy_requests import Kind, PrivacyRequests, PrivacyRequestSettings
from services.profile.store.privacy import PrivacyRequestStore


class WirePrivacyRequests:
    """The privacy requests of a profile database, answered and read in protobuf."""

    def __init__(
        self,
        db: AsyncIOMotorDatabase[Document],
        cipher: FieldCipher,
        settings: PrivacyRequestSettings | None = None,
    ) -> None:
        self.store = PrivacyRequestStore(db, cipher, settings)
        self.domain = PrivacyRequests(self.store, settings)
        # The raw collection, for tests that look at what rests in the database.
        self.requests = self.store.requests

    async def open(self, request_id: str, kind: Kind, at: datetime) -> None:
        """Open a request as the servicer does."""
        await self.domain.open(request_id, kind, at)

    async def answer(self, completed: events_pb2.PrivacyCompleted) -> None:
        """Record an answer as the ``privacy.completed`` consumer does."""
        await self.domain.answer(privacy_answer(completed))

    async def status(self, request_id: str) -> privacy_pb2.PrivacyRequestStatus:
        """The status as ``GetPrivacyRequest`` answers it."""
        return status_proto(await self.domain.status(request_id))

    async def rotate_keys(self, *, check_only: bool = False) -> Tally:
        """Key rotation of the records' exports."""
        return await self.store.rotate_keys(check_only=check_only)
