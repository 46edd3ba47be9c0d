"""The wallet's stored records as the domain reads them: a pass, an offer, a device
registration and what the wallet remembers of a customer. The store returns these; the
domain modules name them in their store Protocols (so ``mypy`` checks every field read)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import NotRequired, TypedDict

from services.wallet.google.ids import Resource

# A display field's value: counts (points, cashback_minor) are whole numbers, the rest text.
FieldValue = str | int | float
# A ``$set`` of one pass by (dotted) key path, e.g. ``"fields.points" -> 120``.
PassChanges = Mapping[str, object]


class PassLocation(TypedDict):
    """A place where the pass shows on the lock screen."""

    latitude: float
    longitude: float
    relevant_text: NotRequired[str]


class GoogleIds(TypedDict):
    """A Google pass's object and class, and the field values its messages were derived
    from (so a change already told is not told again)."""

    resource: Resource
    class_id: str
    object_id: str
    # Field key -> the value shown when it was last announced.
    pushed: dict[str, str]


class NewPass(TypedDict):
    """A pass as issued, before the store gives it its times and sequence."""

    _id: str
    customer_id: str
    kind: str
    platform: str
    pass_type_id: str
    # The per-pass secret phones send back (``Authorization: ApplePass <token>``).
    authentication_token: str
    template: str
    # Display field values (points, tier, offers, status, message, ...).
    fields: dict[str, FieldValue]
    voided: bool
    # Per field: whether its last change speaks on the lock screen.
    announce: NotRequired[dict[str, bool]]
    offer_id: NotRequired[str]
    expires_at: NotRequired[datetime]
    relevant_dates: NotRequired[list[datetime]]
    locations: NotRequired[list[PassLocation]]
    # Google's ids of the pass and the field values its messages were derived from.
    google: NotRequired[GoogleIds]


class StoredPass(NewPass):
    """One pass, keyed by serial number (``_id``)."""

    created_at: datetime
    # Whole seconds, at least one second after the previous change (HTTP dates).
    updated_at: datetime
    # The global sequence phones send back as "passes updated since".
    update_seq: int
    push_due: NotRequired[datetime]
    push_claim: NotRequired[str]
    reminder_due: NotRequired[datetime | None]


class PassExtras(TypedDict, total=False):
    """What a pass change sets beside its display fields (UpdatePass, tickets, voiding,
    erasure)."""

    kind: str
    voided: bool
    customer_id: str
    fields: dict[str, FieldValue]
    announce: dict[str, bool]
    relevant_dates: list[datetime]
    locations: list[PassLocation]
    expires_at: datetime
    reminder_due: datetime | None


class LoyaltyFigures(TypedDict, total=False):
    """A customer's loyalty figures now (empty when the profile does not know them)."""

    points: int
    cashback_minor: int
    tier: str


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
