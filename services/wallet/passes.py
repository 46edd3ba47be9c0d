"""Wallet passes: issue, look up, void, and render a pass as the phone downloads it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.platform.errors import InvalidArgument, NotFound
from services.wallet.applepass import PassContent, PassField, PassSigner, build_pkpass
from services.wallet.images import image_files
from services.wallet.store import WalletStore
from services.wallet.templates import PassKind, PassTemplate, template_named

APPLE = "apple"
MAX_CUSTOMERS = 1_000
MAX_ID_LENGTH = 128


def authentication_token() -> str:
    """A fresh per-pass token (43 URL-safe characters; Apple asks for 16 or more)."""
    return secrets.token_urlsafe(32)


def _fields(doc: Mapping[str, Any], template: PassTemplate) -> dict[str, list[PassField]]:
    values = doc.get("fields", {})
    tier = str(values.get("tier", template.default_tier))
    points = int(values.get("points", 0))
    tier_field = PassField("tier", tier, "tier", "Congratulations, you are now %@")
    points_field = PassField("points", points, "points", "You now have %@ points")
    terms = PassField("terms", "terms_text", "terms")
    kind = PassKind(doc["kind"])
    if kind is PassKind.STORE_CARD:
        cashback = int(values.get("cashback_minor", 0)) / 100
        return {
            "header": [points_field],
            "primary": [
                PassField(
                    "cashback",
                    cashback,
                    "cashback",
                    "Your cashback balance is %@",
                    currency=template.currency,
                )
            ],
            "secondary": [tier_field],
            "back": [terms],
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
            "back": [terms],
        }
    if kind is PassKind.EVENT_TICKET:
        return {
            "primary": [PassField("event", str(values.get("event", "member_event")), "event")],
            "secondary": [tier_field],
            "back": [terms],
        }
    return {"primary": [tier_field], "secondary": [points_field], "back": [terms]}


def pass_content(doc: Mapping[str, Any], web_service_url: str) -> PassContent:
    """What a stored pass shows, from its template and field values."""
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
        back=areas.get("back", []),
        web_service_url=web_service_url,
        authentication_token=doc["authentication_token"],
        places=template.places,
        relevant_dates=tuple(doc.get("relevant_dates", ())),
        expiration=doc.get("expires_at"),
        voided=bool(doc.get("voided", False)),
        sharing_prohibited=template.sharing_prohibited,
        strings=template.strings,
        images=image_files(colours.background),
    )


class WalletPasses:
    """The passes Lodestar issued, signed with one pass type certificate."""

    def __init__(
        self,
        store: WalletStore,
        signer: PassSigner,
        web_service_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.signer = signer
        self.web_service_url = web_service_url
        self.clock = clock

    @property
    def pass_type_id(self) -> str:
        """The pass type id every pass carries."""
        return self.signer.pass_type_id

    async def issue(self, customer_id: str, kind: PassKind, template: str) -> dict[str, Any]:
        """A new Apple pass for the customer with a fresh serial and token."""
        if not customer_id or len(customer_id) > MAX_ID_LENGTH:
            raise InvalidArgument(f"customer_id must be 1 to {MAX_ID_LENGTH} characters")
        chosen = template_named(template)
        now = self.clock()
        doc: dict[str, Any] = {
            "_id": uuid.uuid4().hex,
            "customer_id": customer_id,
            "kind": kind.value,
            "platform": APPLE,
            "pass_type_id": self.pass_type_id,
            "authentication_token": authentication_token(),
            "template": chosen.name,
            "fields": {"tier": chosen.default_tier, "points": 0, "cashback_minor": 0},
            "voided": False,
        }
        if kind is PassKind.COUPON:
            doc["expires_at"] = now.replace(microsecond=0) + timedelta(days=chosen.offer_valid_days)
        return await self.store.insert_pass(doc, now)

    async def get(self, serial_number: str) -> dict[str, Any]:
        """One pass; NotFound when the serial is unknown."""
        doc = await self.store.get_pass(serial_number) if serial_number else None
        if doc is None:
            raise NotFound(f"no pass with serial number {serial_number!r}")
        return doc

    async def of_customers(self, customer_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Every pass of each customer, keyed by customer id."""
        if len(customer_ids) > MAX_CUSTOMERS:
            raise InvalidArgument(f"at most {MAX_CUSTOMERS} customer_ids per call")
        if any(not c for c in customer_ids):
            raise InvalidArgument("customer_ids must not contain an empty id")
        found: dict[str, list[dict[str, Any]]] = {c: [] for c in customer_ids}
        for doc in await self.store.passes_of(list(found)):
            found[doc["customer_id"]].append(doc)
        return found

    async def void(self, serial_number: str) -> dict[str, Any]:
        """Mark a pass voided (idempotent); phones get it on their next update."""
        current = await self.get(serial_number)
        if current.get("voided"):
            return current
        changed = await self.store.change_pass(serial_number, {"voided": True}, self.clock())
        if changed is None:
            raise NotFound(f"no pass with serial number {serial_number!r}")
        return changed

    def render(self, doc: Mapping[str, Any]) -> bytes:
        """The signed ``.pkpass`` of a stored pass."""
        return build_pkpass(pass_content(doc, self.web_service_url), self.signer)
