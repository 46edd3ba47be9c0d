"""The profile service's stored records as the domain and the API read them: consent, the
cart, the last page or screen, timeline entries and the privacy export. The store returns
these (``mypy`` checks every field read); their shapes are the ones the fold writes
(:mod:`services.profile.fold`). Pure types, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

# Free JSON sent by the customer's apps (traits, event properties): any keys and values.
JsonObject = dict[str, Any]


class ConsentState(TypedDict):
    """The latest decision for one consent purpose (``consent.<purpose>``)."""

    state: str
    source: str
    at: datetime


class ConsentEntry(ConsentState):
    """One decision in the consent history, with its purpose and the event that made it."""

    purpose: str
    event_id: str


class CartAddition(TypedDict):
    """The latest product added to the cart (``cart.last_added``)."""

    at: datetime
    product_id: str


class CartOrder(TypedDict):
    """When the latest order closed the cart (``cart.last_ordered``)."""

    at: datetime


class StoredCart(TypedDict, total=False):
    """The cart's two times; either is missing until its first event."""

    last_added: CartAddition
    last_ordered: CartOrder


class ViewedAt(TypedDict):
    """The latest page or screen viewed (``last_page`` / ``last_screen``), and when."""

    name: str
    at: datetime


class TimelineRecord(TypedDict):
    """One event of a customer's timeline, PII traits decrypted."""

    _id: str
    customer_id: str
    type: str
    name: str
    at: datetime
    source: str
    properties: JsonObject
    traits: JsonObject


class ExportedOrder(TypedDict):
    """An order in the privacy export (times as ISO 8601)."""

    order_id: str
    amount_minor: int
    currency: str | None
    at: str
    refunded_minor: int


class ExportedEvent(TypedDict):
    """A timeline event in the privacy export (times as ISO 8601)."""

    event_id: str
    type: str
    name: str
    at: str
    source: str
    properties: JsonObject
    traits: JsonObject


class ExportedProfile(TypedDict):
    """What a stored profile holds, as JSON-ready data."""

    customer_id: str
    traits: JsonObject
    event_counts: dict[str, int]
    first_seen: str | None
    last_seen: str | None
    orders: list[ExportedOrder]
    loyalty: dict[str, int]


class ProfileExport(TypedDict, total=False):
    """Everything profile holds about a customer, for a privacy export: every key, or none
    (``{}``) when the customer has no profile."""

    customer_id: str
    traits: JsonObject
    event_counts: dict[str, int]
    first_seen: str | None
    last_seen: str | None
    orders: list[ExportedOrder]
    loyalty: dict[str, int]
    events: list[ExportedEvent]
    groups: list[str]


def json_object(record: Mapping[str, Any]) -> JsonObject:
    """A record as the plain JSON object protobuf ``Struct`` and the privacy answer take."""
    return dict(record)
