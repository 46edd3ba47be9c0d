"""Pass templates: the brand of a pass (organisation, colours per loyalty tier, places, texts
in English and Spanish). A pass names its template; the kind decides the layout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from services.platform.errors import InvalidArgument

LANGUAGES = ("en", "es")
MAX_LOCATIONS = 10  # Apple shows at most ten relevant locations


class PassKind(StrEnum):
    """The Apple pass styles Lodestar issues."""

    STORE_CARD = "storeCard"
    COUPON = "coupon"
    EVENT_TICKET = "eventTicket"
    GENERIC = "generic"


@dataclass(frozen=True)
class TierColours:
    """Colours of a pass for one loyalty tier, as ``(r, g, b)``."""

    background: tuple[int, int, int]
    foreground: tuple[int, int, int]
    label: tuple[int, int, int]


@dataclass(frozen=True)
class Place:
    """A relevant location: the pass shows on the lock screen near it."""

    latitude: float
    longitude: float
    relevant_text: str = ""
    altitude: float | None = None


@dataclass(frozen=True)
class PassTemplate:
    """The brand and texts of a pass; labels are keys translated per language."""

    name: str
    organization_name: str
    description: str
    logo_text: str
    tier_colours: Mapping[str, TierColours]
    default_tier: str
    currency: str = "EUR"
    places: tuple[Place, ...] = ()
    sharing_prohibited: bool = True
    # Coupons expire this many days after they are issued.
    offer_valid_days: int = 30
    strings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def colours(self, tier: str) -> TierColours:
        """The colours of ``tier``, or of the default tier when the tier is unknown."""
        return self.tier_colours.get(tier, self.tier_colours[self.default_tier])


# Label keys of the layouts, translated per language (pass.strings).
_STRINGS = {
    "en": {
        "points": "Points",
        "cashback": "Cashback",
        "tier": "Tier",
        "member": "Member",
        "offer": "Offer",
        "expires": "Expires",
        "event": "Event",
        "venue": "Venue",
        "date": "Date",
        "terms": "Terms",
        "terms_text": "Points and cashback follow the programme terms.",
        "member_offer": "Member offer",
        "member_event": "Member event",
    },
    "es": {
        "points": "Puntos",
        "cashback": "Saldo cashback",
        "tier": "Nivel",
        "member": "Socio",
        "offer": "Oferta",
        "expires": "Caduca",
        "event": "Evento",
        "venue": "Lugar",
        "date": "Fecha",
        "terms": "Condiciones",
        "terms_text": "Los puntos y el cashback siguen las condiciones del programa.",
        "member_offer": "Oferta para socios",
        "member_event": "Evento para socios",
    },
}

DEFAULT_TEMPLATE = PassTemplate(
    name="default",
    organization_name="Lodestar",
    description="Lodestar loyalty card",
    logo_text="Lodestar",
    tier_colours={
        "Bronze": TierColours((140, 90, 50), (255, 255, 255), (250, 225, 200)),
        "Silver": TierColours((120, 130, 140), (255, 255, 255), (225, 230, 235)),
        "Gold": TierColours((190, 150, 40), (20, 20, 20), (70, 50, 0)),
        "Platinum": TierColours((40, 40, 45), (255, 255, 255), (200, 200, 210)),
    },
    default_tier="Bronze",
    places=(Place(40.4168, -3.7038, "Our flagship store is nearby"),),
    strings=_STRINGS,
)

TEMPLATES: Mapping[str, PassTemplate] = {DEFAULT_TEMPLATE.name: DEFAULT_TEMPLATE}


def template_named(name: str) -> PassTemplate:
    """The template called ``name`` (empty means ``default``)."""
    template = TEMPLATES.get(name or DEFAULT_TEMPLATE.name)
    if template is None:
        raise InvalidArgument(
            f"unknown template {name!r}; known templates: {', '.join(sorted(TEMPLATES))}"
        )
    return template
