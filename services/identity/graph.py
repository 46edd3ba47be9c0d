"""The identity graph's rules, as pure logic: which identifiers of an event link it to a
customer, how they are normalised, and which customer an event resolves to.

This is the thin first version: the first known identifier, in priority order, wins.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.platform.errors import InvalidArgument

# Highest priority first: a known user id decides over an e-mail, an e-mail over a device.
IDENTIFIER_TYPES: tuple[str, ...] = (
    "user_id",
    "email",
    "phone",
    "loyalty_number",
    "device_id",
    "wallet_serial",
    "anonymous_id",
)

# Customer ids are derived from the first event that created the customer, so a redelivered
# event that creates a customer creates the same one.
_CUSTOMER_NAMESPACE = uuid.UUID("3f8a1c52-6a4e-4f0b-9a7d-5b7e0c9d2e11")

MAX_VALUE_LENGTH = 512


@dataclass(frozen=True, order=True)
class IdentifierValue:
    """One normalised identifier, e.g. ``email: ada@example.com``."""

    type: str
    value: str

    @property
    def key(self) -> str:
        """The graph's unique key for this identifier."""
        return f"{self.type}:{self.value}"


def normalize(type_: str, value: str) -> IdentifierValue:
    """Validate the type and canonicalise the value (e-mail trimmed and lower-cased).

    Raises :class:`InvalidArgument` naming what is wrong.
    """
    if type_ not in IDENTIFIER_TYPES:
        raise InvalidArgument(
            f"unknown identifier type {type_!r}; expected one of {', '.join(IDENTIFIER_TYPES)}"
        )
    cleaned = value.strip()
    if type_ == "email":
        cleaned = cleaned.lower()
        if "@" not in cleaned:
            raise InvalidArgument(f"email {value!r} has no '@'")
    if not cleaned:
        raise InvalidArgument(f"{type_} must not be empty")
    if len(cleaned) > MAX_VALUE_LENGTH:
        raise InvalidArgument(f"{type_} is longer than {MAX_VALUE_LENGTH} characters")
    return IdentifierValue(type_, cleaned)


def linking_identifiers(raw: Iterable[tuple[str, str]]) -> list[IdentifierValue]:
    """The event's usable identifiers in priority order; unusable ones are skipped."""
    found: set[IdentifierValue] = set()
    for type_, value in raw:
        try:
            found.add(normalize(type_, value))
        except InvalidArgument:
            continue
    return sorted(found, key=lambda i: (IDENTIFIER_TYPES.index(i.type), i.value))


def resolve_customer(
    identifiers: list[IdentifierValue], owners: Mapping[str, str], event_id: str
) -> str:
    """The customer an event belongs to: the owner of its highest-priority known identifier,
    or a new customer id derived from the event."""
    for identifier in identifiers:
        owner = owners.get(identifier.key)
        if owner:
            return owner
    return str(uuid.uuid5(_CUSTOMER_NAMESPACE, event_id))


@dataclass(frozen=True)
class Resolution:
    """Where one event landed: its customer, and the identifiers to attach to that customer
    (new ones, and ones it already owns, whose last-seen moves on)."""

    customer_id: str
    links: list[IdentifierValue]


def resolve_batch(
    events: Sequence[tuple[str, list[IdentifierValue]]], owners: Mapping[str, str]
) -> list[Resolution]:
    """Resolve events in order against the stored owners; an identifier linked by an earlier
    event of the batch is known to the later ones."""
    known = dict(owners)
    resolutions = []
    for event_id, identifiers in events:
        customer_id = resolve_customer(identifiers, known, event_id)
        links = [i for i in identifiers if known.setdefault(i.key, customer_id) == customer_id]
        resolutions.append(Resolution(customer_id, links))
    return resolutions


@dataclass(frozen=True)
class Ownership:
    """What the graph has stored for one identifier."""

    customer_id: str
    last_seen: datetime


def needs_write(stored: Ownership | None, seen_at: datetime, resolution: timedelta) -> bool:
    """Whether linking an identifier seen at ``seen_at`` must be written: it is new, or its
    stored last-seen is older than ``resolution`` (so a busy customer costs one write per
    identifier per interval, not one per event)."""
    return stored is None or seen_at - stored.last_seen >= resolution
