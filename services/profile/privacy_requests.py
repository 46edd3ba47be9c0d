"""The status of platform-wide privacy requests (erase or export one customer).

The profile process keeps one record per request: when it was asked, which services must
answer, and each answer as it arrives on ``privacy.completed``. A request is done when every
expected service has answered; only then are the services' exports shown. Records hold no
customer id, so an erased customer leaves no trace here (the store keeps exports encrypted
until the record expires).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeAlias

from lodestar.v1 import events_pb2
from services.platform.errors import NotFound
from services.profile.records import JsonObject

KINDS = (events_pb2.PRIVACY_REQUEST_KIND_ERASE, events_pb2.PRIVACY_REQUEST_KIND_EXPORT)
EXPORT = events_pb2.PRIVACY_REQUEST_KIND_EXPORT
# Erase or export (the protobuf enum's values).
Kind: TypeAlias = "events_pb2.PrivacyRequestKind.ValueType"


@dataclass(frozen=True)
class PrivacyRequestSettings:
    """Which services must answer before a request is done, and how long records stay."""

    services: tuple[str, ...] = ("identity", "profile")
    ttl_s: int = 30 * 24 * 3600


@dataclass(frozen=True)
class PrivacyAnswer:
    """One service's answer to request ``request_id`` (its export, for an export)."""

    request_id: str
    service: str
    kind: Kind
    completed_at: datetime
    export: JsonObject | None = None


class SealedExport(Protocol):
    """A service's export as stored (encrypted): opened only when the request is done."""

    def reveal(self) -> JsonObject:
        """The export in clear."""


@dataclass(frozen=True)
class StoredAnswer:
    """An answer as the store holds it."""

    completed_at: datetime
    export: SealedExport | None = None


@dataclass(frozen=True)
class StoredPrivacyRequest:
    """A request record: what was asked, when, who must answer and who did."""

    request_id: str
    kind: Kind
    requested_at: datetime
    expected: tuple[str, ...]
    answers: Mapping[str, StoredAnswer]


@dataclass(frozen=True)
class ServiceState:
    """Whether one service answered, and when."""

    service: str
    done: bool
    completed_at: datetime | None


@dataclass(frozen=True)
class PrivacyStatus:
    """Where a request stands; ``export`` (per service) only once every service answered."""

    request_id: str
    kind: Kind
    done: bool
    services: tuple[ServiceState, ...]
    requested_at: datetime
    completed_at: datetime | None
    # Each answering service's export, by service name.
    export: dict[str, JsonObject] | None


class PrivacyRequestStore(Protocol):
    """Where request records live (the profile store's ``privacy_requests``)."""

    async def open(
        self, request_id: str, kind: Kind, at: datetime, expected: tuple[str, ...]
    ) -> None:
        """Record a new request (a no-op when it is known)."""

    async def answer(self, answer: PrivacyAnswer, expected: tuple[str, ...]) -> None:
        """Record one service's answer, opening the record when it is unknown."""

    async def get(self, request_id: str) -> StoredPrivacyRequest | None:
        """The record, or ``None`` when unknown or expired."""


class PrivacyRequests:
    """Opens requests, records answers and says where a request stands."""

    def __init__(
        self, store: PrivacyRequestStore, settings: PrivacyRequestSettings | None = None
    ) -> None:
        self.store = store
        self.settings = settings or PrivacyRequestSettings()

    async def open(self, request_id: str, kind: Kind, at: datetime) -> None:
        """Record a new request as pending for every expected service (a no-op if known)."""
        await self.store.open(request_id, kind, at, self.settings.services)

    async def answer(self, answer: PrivacyAnswer) -> None:
        """Record one service's answer; a redelivered answer rewrites the same values. An
        answer for a request submitted elsewhere (straight onto the topic) opens its record."""
        await self.store.answer(answer, self.settings.services)

    async def status(self, request_id: str) -> PrivacyStatus:
        """Where the request stands; exports read once every service has answered."""
        record = await self.store.get(request_id)
        if record is None:
            raise NotFound(f"privacy request {request_id!r} is unknown or expired")
        answers = record.answers
        names = list(record.expected) + sorted(set(answers) - set(record.expected))
        services = tuple(
            ServiceState(
                name,
                name in answers,
                answers[name].completed_at if name in answers else None,
            )
            for name in names
        )
        done = all(name in answers for name in record.expected)
        completed_at = (
            max(answers[n].completed_at for n in record.expected)
            if done and record.expected
            else None
        )
        export = None
        if done and record.kind == EXPORT:
            export = {
                name: answer.export.reveal()
                for name, answer in sorted(answers.items())
                if answer.export is not None
            }
        return PrivacyStatus(
            request_id=record.request_id,
            kind=record.kind,
            done=done,
            services=services,
            requested_at=record.requested_at,
            completed_at=completed_at,
            export=export,
        )
