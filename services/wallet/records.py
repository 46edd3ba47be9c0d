"""The wallet's stored records as the domain reads them: a pass, an offer, a device
registration and what the wallet remembers of a customer. The store returns these; the
domain modules name them in their store Protocols (so ``mypy`` checks every field read)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict


class StoredPass(TypedDict):
    """One pass, keyed by serial number (``_id``)."""

    _id: str
    customer_id: str
    kind: str
    platform: str
    pass_type_id: str
    # The per-pass secret phones send back (``Authorization: ApplePass <token>``).
    authentication_token: str
    template: str
    # Display field values (points, tier, offers, status, message, ...).
    fields: dict[str, Any]
    voided: bool
    created_at: datetime
    # Whole seconds, at least one second after the previous change (HTTP dates).
    updated_at: datetime
    # The global sequence phones send back as "passes updated since".
    update_seq: int
    # Per field: whether its last change speaks on the lock screen.
    announce: NotRequired[dict[str, bool]]
    offer_id: NotRequired[str]
    expires_at: NotRequired[datetime]
    relevant_dates: NotRequired[list[datetime]]
    locations: NotRequired[list[dict[str, Any]]]
    # Google's ids of the pass and the field values its messages were derived from.
    google: NotRequired[dict[str, Any]]
    push_due: NotRequired[datetime]
    push_claim: NotRequired[str]
    reminder_due: NotRequired[datetime | None]


class OfferEvent(TypedDict):
    """The event an offer's pass becomes the ticket of, once the survey is answered."""

    name: str
    venue: str
    latitude: float
    longitude: float
    starts_at: datetime


class StoredOffer(TypedDict):
    """An offer bound to a segment."""

    _id: str
    segment_id: str
    title: str
    details: str
    survey_url: str
    event: NotRequired[OfferEvent]


class Registration(TypedDict):
    """A device registered for a pass's updates, with its push token."""

    _id: str
    device_id: str
    pass_type_id: str
    serial_number: str
    push_token: str
    created_at: datetime


class CustomerRecord(TypedDict, total=False):
    """What the wallet remembers of a customer: consent, marketing times, held offers."""

    _id: str
    wallet_marketing: bool
    marketing_at: list[datetime]
    offers: list[str]
    offer_titles: list[str]


def registration_id(device_id: str, pass_type_id: str, serial_number: str) -> str:
    """The key of one registration."""
    return f"{device_id}:{pass_type_id}:{serial_number}"
