"""Wallet passes: issue, look up, void, and render a pass as the phone downloads it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from prometheus_client import Counter

from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from services.wallet.applepass import PassContent, PassField, PassSigner, build_pkpass
from services.wallet.images import image_files
from services.wallet.records import (
    CustomerRecord,
    FieldValue,
    GoogleIds,
    LoyaltyFigures,
    NewPass,
    PassChanges,
    PassExtras,
    PassLocation,
    Registration,
    StoredOffer,
    StoredPass,
)
from services.wallet.templates import (
    MAX_LOCATIONS,
    PassKind,
    PassTemplate,
    Place,
    template_named,
)

APPLE = "apple"
GOOGLE = "google"
MAX_CUSTOMERS = 1_000
PASSES_ISSUED = Counter(
    "lodestar_wallet_passes_issued_total",
    "Passes issued, by kind and platform",
    ["kind", "platform"],
)
MAX_ID_LENGTH = 128


def authentication_token() -> str:
    """A fresh per-pass token (43 URL-safe characters; Apple asks for 16 or more)."""
    return secrets.token_urlsafe(32)


# The lock-screen text of each field when its value changes (%@ is the new value). A field
# whose last change was held back (marketing without consent or over the cap) has none.
CHANGE_MESSAGES: Mapping[str, str] = {
    "tier": "Congratulations, you are now %@",
    "points": "You now have %@ points",
    "cashback": "Your cashback balance is %@",
    "status": "%@",
    "offers": "%@",
    "message": "%@",
    "event": "Your ticket: %@",
}
# What live updates and UpdatePass may set, with the check each value must pass.
DISPLAY_FIELDS = ("points", "cashback_minor", "tier", "status", "offers", "event", "venue")
MAX_TEXT = 200


def _field(
    doc: NewPass, key: str, value: FieldValue, *, label: str | None = None, currency: str = ""
) -> PassField:
    announce = doc.get("announce", {}).get(key, True)
    message = CHANGE_MESSAGES.get(key, "") if announce else ""
    return PassField(key, value, key if label is None else label, message, currency=currency)


def _extras(doc: NewPass) -> tuple[list[PassField], list[PassField]]:
    """Status and offers (front) and the last message (back), when the pass has them."""
    values = doc.get("fields", {})
    front = [_field(doc, k, str(values[k])) for k in ("status", "offers") if values.get(k)]
    back = []
    if values.get("message"):
        back.append(
            _field(
                doc, "message", str(values["message"]), label=str(values.get("message_header", ""))
            )
        )
    if values.get("details"):
        back.append(PassField("details", str(values["details"]), "details"))
    return front, back


def _fields(doc: NewPass, template: PassTemplate) -> dict[str, list[PassField]]:
    values = doc.get("fields", {})
    tier = str(values.get("tier", template.default_tier))
    points = int(values.get("points", 0))
    tier_field = _field(doc, "tier", tier)
    points_field = _field(doc, "points", points)
    terms = PassField("terms", "terms_text", "terms")
    front, back = _extras(doc)
    kind = PassKind(doc["kind"])
    if kind is PassKind.STORE_CARD:
        cashback = int(values.get("cashback_minor", 0)) / 100
        return {
            "header": [points_field],
            "primary": [_field(doc, "cashback", cashback, currency=template.currency)],
            "secondary": [tier_field],
            "auxiliary": front,
            "back": [*back, terms],
        }
    if kind is PassKind.COUPON:
        expires = doc.get("expires_at")
        return {
            "primary": [PassField("offer", str(values.get("offer", "member_offer")), "offer")],
            "secondary": (
                [PassField("expires", expires.isoformat(), "expires", is_date=True)]
                if expires
                else []
            ),
            "auxiliary": front,
            "back": [*back, terms],
        }
    if kind is PassKind.EVENT_TICKET:
        starts = doc.get("relevant_dates") or []
        secondary = [PassField("venue", str(values.get("venue", "")), "venue")]
        if starts:
            secondary.append(PassField("date", starts[0].isoformat(), "date", is_date=True))
        return {
            "primary": [_field(doc, "event", str(values.get("event", "member_event")))],
            "secondary": secondary if values.get("venue") else secondary[1:],
            "auxiliary": front,
            "back": [*back, terms],
        }
    return {
        "primary": [tier_field],
        "secondary": [points_field],
        "auxiliary": front,
        "back": [*back, terms],
    }


def _places(doc: NewPass, template: PassTemplate) -> tuple[Place, ...]:
    stored = doc.get("locations")
    if not stored:
        return template.places
    return tuple(Place(p["latitude"], p["longitude"], p.get("relevant_text", "")) for p in stored)


def pass_content(doc: NewPass, web_service_url: str) -> PassContent:
    """What a pass (stored, or about to be) shows, from its template and field values."""
    template = template_named(doc["template"])
    tier = str(doc.get("fields", {}).get("tier", template.default_tier))
    colours = template.colours(tier)
    areas = _fields(doc, template)
    return PassContent(
        serial_number=doc["_id"],
        kind=PassKind(doc["kind"]),
        description=template.description,
        organization_name=template.organization_name,
        logo_text=template.logo_text,
        colours=colours,
        barcode_message=doc["_id"],
        header=areas.get("header", []),
        primary=areas.get("primary", []),
        secondary=areas.get("secondary", []),
        auxiliary=areas.get("auxiliary", []),
        back=areas.get("back", []),
        web_service_url=web_service_url,
        authentication_token=doc["authentication_token"],
        places=_places(doc, template),
        relevant_dates=tuple(doc.get("relevant_dates", ())),
        expiration=doc.get("expires_at"),
        voided=bool(doc.get("voided", False)),
        sharing_prohibited=template.sharing_prohibited,
        strings=template.strings,
        images=image_files(colours.background),
    )


class PassStore(Protocol):
    """Where the passes, offers and device registrations are kept (the wallet's store)."""

    async def customer(self, customer_id: str) -> CustomerRecord | None:
        """What the wallet remembers of a customer, or None."""
        ...

    async def insert_pass(self, doc: NewPass, now: datetime) -> StoredPass:
        """Store a new pass; returns it as stored."""
        ...

    async def get_pass(self, serial_number: str) -> StoredPass | None:
        """One pass, or None."""
        ...

    async def passes_of(self, customer_ids: Sequence[str]) -> list[StoredPass]:
        """Every pass of these customers, oldest first."""
        ...

    async def change_pass(
        self,
        serial_number: str,
        changes: PassChanges,
        now: datetime,
        push_at: datetime | None = None,
        current: StoredPass | None = None,
    ) -> StoredPass | None:
        """Apply ``changes`` to one pass; None when it does not exist."""
        ...

    async def change_passes(
        self,
        changes: Sequence[tuple[StoredPass, PassChanges]],
        now: datetime,
        push_at: datetime,
    ) -> list[StoredPass | None]:
        """Apply changes to many passes at once."""
        ...

    async def put_offer(self, offer: StoredOffer) -> None:
        """Create or replace an offer."""
        ...

    async def all_offers(self) -> list[StoredOffer]:
        """Every offer, by id."""
        ...

    async def get_offer(self, offer_id: str) -> StoredOffer | None:
        """One offer, or None."""
        ...

    async def register(
        self, device_id: str, pass_type_id: str, serial_number: str, push_token: str, now: datetime
    ) -> bool:
        """Register a device for a pass; True when new."""
        ...

    async def unregister(self, device_id: str, pass_type_id: str, serial_number: str) -> bool:
        """Remove a registration; True when there was one."""
        ...

    async def registrations_of(self, serial_number: str) -> list[Registration]:
        """The devices registered for a pass."""
        ...

    async def updated_since(
        self, device_id: str, pass_type_id: str, since_seq: int | None
    ) -> tuple[list[str], int]:
        """Serials of the device's passes of this type changed after ``since_seq``."""
        ...


class GoogleChannel(Protocol):
    """Google Wallet as the passes use it (see :mod:`services.wallet.googlepasses`)."""

    async def create(self, doc: NewPass, content: PassContent) -> GoogleIds:
        """Insert the class and object of a new pass; returns the ids to store."""
        ...

    def save_link(self, doc: StoredPass) -> str:
        """The "Save to Google Wallet" link of a stored Google pass."""
        ...


class LoyaltySource(Protocol):
    """Where a new card's figures come from (the profile service)."""

    async def loyalty(self, customer_id: str) -> LoyaltyFigures:
        """Points, cashback_minor and tier now (empty when unknown)."""
        ...


class IdentityLink(Protocol):
    """Links a pass serial to its customer in the identity graph, so events that carry
    only the serial (installed, removed) resolve to the customer."""

    async def link(self, customer_id: str, serial_number: str) -> None:
        """NotFound when identity does not know the customer."""
        ...


def _check_text(key: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"fields.{key} is longer than {MAX_TEXT} characters")
    return value


def _check_count(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgument(f"fields.{key} must be a whole number, got {value!r}") from None
    if number < 0:
        raise InvalidArgument(f"fields.{key} must not be negative")
    return number


def checked_fields(template: PassTemplate, raw: Mapping[str, str]) -> dict[str, FieldValue]:
    """Display fields from UpdatePass, validated; the error names the bad field."""
    fields: dict[str, FieldValue] = {}
    for key, value in raw.items():
        if key not in DISPLAY_FIELDS:
            raise InvalidArgument(
                f"fields.{key} is not a pass field; known: {', '.join(DISPLAY_FIELDS)}"
            )
        if key in ("points", "cashback_minor"):
            fields[key] = _check_count(key, value)
        elif key == "tier":
            if value not in template.tier_colours:
                raise InvalidArgument(
                    f"fields.tier must be one of {', '.join(template.tier_colours)}"
                )
            fields[key] = value
        else:
            fields[key] = _check_text(key, value)
    return fields


def checked_locations(places: Sequence[PassLocation]) -> list[PassLocation]:
    """Relevant locations, validated (at most ten, real coordinates)."""
    if len(places) > MAX_LOCATIONS:
        raise InvalidArgument(f"locations: at most {MAX_LOCATIONS}")
    for i, place in enumerate(places):
        if not -90 <= place["latitude"] <= 90 or not -180 <= place["longitude"] <= 180:
            raise InvalidArgument(f"locations[{i}] is not a latitude/longitude on Earth")
        _check_text(f"locations[{i}].relevant_text", place.get("relevant_text", ""))
    return [p.copy() for p in places]


class WalletPasses:
    """The passes Lodestar issued, signed with one pass type certificate. Every change
    schedules a push ``push_delay_s`` later; changes within that window share it."""

    def __init__(
        self,
        store: PassStore,
        signer: PassSigner,
        web_service_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        push_delay_s: float = 0.0,
        google: GoogleChannel | None = None,
        linker: IdentityLink | None = None,
        figures: LoyaltySource | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.web_service_url = web_service_url
        self.clock = clock
        self.push_delay = timedelta(seconds=push_delay_s)
        self.google = google
        self.linker = linker
        self.figures = figures
        self._listeners: list[Callable[[datetime, StoredPass], None]] = []

    @property
    def pass_type_id(self) -> str:
        """The pass type id every Apple pass carries."""
        return self.signer.pass_type_id

    def on_push_scheduled(self, listener: Callable[[datetime, StoredPass], None]) -> None:
        """Call ``listener`` with the due time and the changed pass of every push scheduled
        here."""
        self._listeners.append(listener)

    async def issue(
        self,
        customer_id: str,
        kind: PassKind,
        template: str,
        platform: str = APPLE,
        offer_id: str = "",
    ) -> StoredPass:
        """A new pass for the customer with a fresh serial and token. Cards start from the
        customer's loyalty figures now (from the profile service) and the offers the wallet
        knows they hold; offer passes carry their offer."""
        if not customer_id or len(customer_id) > MAX_ID_LENGTH:
            raise InvalidArgument(f"customer_id must be 1 to {MAX_ID_LENGTH} characters")
        if platform == GOOGLE and self.google is None:
            raise InvalidArgument("platform GOOGLE is not configured on this wallet service")
        chosen = template_named(template)
        offer = await self._offer_for(kind, offer_id)
        known: CustomerRecord = await self.store.customer(customer_id) or {}
        figures: LoyaltyFigures = await self.figures.loyalty(customer_id) if self.figures else {}
        now = self.clock()
        serial = uuid.uuid4().hex
        fields: dict[str, FieldValue] = {
            "tier": figures.get("tier", chosen.default_tier),
            "points": figures.get("points", 0),
            "cashback_minor": figures.get("cashback_minor", 0),
        }
        if kind is PassKind.STORE_CARD and known.get("offer_titles"):
            fields["offers"] = "; ".join(known["offer_titles"])
        doc: NewPass = {
            "_id": serial,
            "customer_id": customer_id,
            "kind": kind.value,
            "platform": platform,
            "pass_type_id": self.pass_type_id,
            "authentication_token": authentication_token(),
            "template": chosen.name,
            "fields": fields,
            "voided": False,
        }
        if offer is not None:
            doc["offer_id"] = offer["_id"]
            fields.update(offer=offer["title"], details=offer.get("details", ""))
        if kind is PassKind.COUPON:
            doc["expires_at"] = now.replace(microsecond=0) + timedelta(days=chosen.offer_valid_days)
        if self.linker is not None:
            await self.linker.link(customer_id, serial)
        if platform == GOOGLE:
            assert self.google is not None
            doc["google"] = await self.google.create(doc, pass_content(doc, ""))
        stored = await self.store.insert_pass(doc, now)
        PASSES_ISSUED.labels(kind.value, platform).inc()
        return stored

    async def _offer_for(self, kind: PassKind, offer_id: str) -> StoredOffer | None:
        if kind is not PassKind.COUPON:
            if offer_id:
                raise InvalidArgument("offer_id is only for COUPON passes")
            return None
        if not offer_id:
            raise InvalidArgument("offer_id is required for COUPON passes")
        offer = await self.store.get_offer(offer_id)
        if offer is None:
            raise InvalidArgument(f"unknown offer_id {offer_id!r}")
        return offer

    def save_link(self, doc: StoredPass) -> str:
        """The "Save to Google Wallet" link of a Google pass."""
        if doc.get("platform") != GOOGLE or self.google is None:
            raise InvalidArgument(
                "only Google passes have a save link; Apple passes are added by downloading "
                "the .pkpass"
            )
        return self.google.save_link(doc)

    async def find(self, serial_number: str) -> StoredPass | None:
        """One pass, or None when the serial is unknown."""
        return await self.store.get_pass(serial_number)

    async def get(self, serial_number: str) -> StoredPass:
        """One pass; NotFound when the serial is unknown."""
        doc = await self.store.get_pass(serial_number) if serial_number else None
        if doc is None:
            raise NotFound(f"no pass with serial number {serial_number!r}")
        return doc

    async def of_customers(self, customer_ids: Sequence[str]) -> dict[str, list[StoredPass]]:
        """Every pass of each customer, keyed by customer id."""
        if len(customer_ids) > MAX_CUSTOMERS:
            raise InvalidArgument(f"at most {MAX_CUSTOMERS} customer_ids per call")
        if any(not c for c in customer_ids):
            raise InvalidArgument("customer_ids must not contain an empty id")
        found: dict[str, list[StoredPass]] = {c: [] for c in customer_ids}
        for doc in await self.store.passes_of(list(found)):
            found[doc["customer_id"]].append(doc)
        return found

    async def apply(
        self,
        doc: StoredPass,
        fields: Mapping[str, FieldValue],
        announce: Mapping[str, bool] | None = None,
        extra: PassExtras | None = None,
    ) -> StoredPass | None:
        """Set display ``fields`` (and other keys in ``extra``) on a pass and schedule its
        push; None when nothing changes (a redelivered update pushes nothing).
        ``announce`` says, per field, whether this change speaks on the lock screen."""
        current = doc.get("fields", {})
        changed = {k: v for k, v in fields.items() if current.get(k) != v}
        others = {k: v for k, v in (extra or {}).items() if doc.get(k) != v}
        if not changed and not others:
            return None
        update: dict[str, object] = {f"fields.{k}": v for k, v in changed.items()}
        for key in changed:
            update[f"announce.{key}"] = (announce or {}).get(key, True)
        update.update(others)
        now = self.clock()
        push_at = now + self.push_delay
        result = await self.store.change_pass(
            doc["_id"], update, now, push_at=push_at, current=doc.copy()
        )
        if result is not None:
            for listener in self._listeners:
                listener(push_at, result)
        return result

    async def apply_many(
        self, changes: Sequence[tuple[StoredPass, Mapping[str, FieldValue]]]
    ) -> list[StoredPass | None]:
        """:meth:`apply` of display fields (announced) to many passes, written together;
        None for each pass that nothing changes."""
        pending: list[tuple[int, StoredPass, dict[str, object]]] = []
        for n, (doc, fields) in enumerate(changes):
            current = doc.get("fields", {})
            changed = {k: v for k, v in fields.items() if current.get(k) != v}
            if changed:
                update: dict[str, object] = {f"fields.{k}": v for k, v in changed.items()}
                update.update({f"announce.{k}": True for k in changed})
                pending.append((n, doc, update))
        out: list[StoredPass | None] = [None] * len(changes)
        if not pending:
            return out
        now = self.clock()
        push_at = now + self.push_delay
        results = await self.store.change_passes(
            [(doc, update) for _, doc, update in pending], now, push_at
        )
        for (n, _, _), result in zip(pending, results, strict=True):
            out[n] = result
            if result is not None:
                for listener in self._listeners:
                    listener(push_at, result)
        return out

    async def update(
        self,
        serial_number: str,
        raw_fields: Mapping[str, str],
        relevant_dates: Sequence[datetime] = (),
        locations: Sequence[PassLocation] = (),
    ) -> StoredPass:
        """UpdatePass: validated display fields, relevant dates and places."""
        doc = await self.get(serial_number)
        if doc.get("voided"):
            raise FailedPrecondition(f"pass {serial_number!r} is voided")
        fields = checked_fields(template_named(doc["template"]), raw_fields)
        extra: PassExtras = {}
        if relevant_dates:
            if len(relevant_dates) > MAX_LOCATIONS:
                raise InvalidArgument(f"relevant_dates: at most {MAX_LOCATIONS}")
            extra["relevant_dates"] = [at.astimezone(UTC) for at in relevant_dates]
        if locations:
            extra["locations"] = checked_locations(locations)
        changed = await self.apply(doc, fields, extra=extra)
        return changed if changed is not None else doc

    async def void(self, serial_number: str) -> StoredPass:
        """Mark a pass voided (idempotent) and push it, so phones show it voided."""
        current = await self.get(serial_number)
        if current.get("voided"):
            return current
        changed = await self.apply(current, {}, extra={"voided": True})
        return changed if changed is not None else current

    def render(self, doc: StoredPass) -> bytes:
        """The signed ``.pkpass`` of a stored pass."""
        return build_pkpass(pass_content(doc, self.web_service_url), self.signer)

    # -- offers and device registrations, kept beside the passes --

    async def put_offer(self, offer: StoredOffer) -> None:
        """Create or replace an offer (checked by :func:`services.wallet.offers.checked_offer`)."""
        await self.store.put_offer(offer)

    async def offers(self) -> list[StoredOffer]:
        """Every offer, by id."""
        return await self.store.all_offers()

    async def register(
        self, device_id: str, pass_type_id: str, serial_number: str, push_token: str, now: datetime
    ) -> bool:
        """Register a device for a pass's updates; True when the registration is new (an
        existing one gets the new push token)."""
        return await self.store.register(device_id, pass_type_id, serial_number, push_token, now)

    async def unregister(self, device_id: str, pass_type_id: str, serial_number: str) -> bool:
        """Remove a device's registration for a pass; True when there was one."""
        return await self.store.unregister(device_id, pass_type_id, serial_number)

    async def registrations_of(self, serial_number: str) -> list[Registration]:
        """The devices registered for a pass."""
        return await self.store.registrations_of(serial_number)

    async def updated_since(
        self, device_id: str, pass_type_id: str, since_seq: int | None
    ) -> tuple[list[str], int]:
        """Serial numbers of the device's passes of this type changed after ``since_seq``
        (all of them when None), and the highest sequence among them."""
        return await self.store.updated_since(device_id, pass_type_id, since_seq)
