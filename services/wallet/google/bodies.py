"""Google Wallet class and object bodies, built from the same platform-neutral
:class:`PassContent` the Apple side signs, and the messages added to passes. Pure functions:
the client in :mod:`services.wallet.clients.google` sends them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from services.wallet.applepass import JsonObject, PassContent, PassField
from services.wallet.google.ids import check_id, class_id, object_id, resource_for
from services.wallet.templates import LANGUAGES, MAX_LOCATIONS, PassKind, PassTemplate

NOTIFY_ON_UPDATE = "NOTIFY_ON_UPDATE"
TEXT_AND_NOTIFY = "TEXT_AND_NOTIFY"
_DEFAULT_LANGUAGE = LANGUAGES[0]


def text_message(header: str, body: str, message_id: str, *, notify: bool = True) -> JsonObject:
    """A pass message; ``TEXT_AND_NOTIFY`` also pushes a notification to the phone."""
    if not message_id:
        raise ValueError("a message needs an id (it makes redelivered messages recognisable)")
    return {
        "id": message_id,
        "header": header,
        "body": body,
        "messageType": TEXT_AND_NOTIFY if notify else "TEXT",
    }


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def localized_string(text: str, strings: Mapping[str, Mapping[str, str]]) -> JsonObject:
    """A ``LocalizedString``: ``text`` translated through the pass strings when it is one of
    their keys (English by default, the other languages as translations), else ``text``."""
    default = strings.get(_DEFAULT_LANGUAGE, {}).get(text, text)
    doc: JsonObject = {"defaultValue": {"language": _DEFAULT_LANGUAGE, "value": default}}
    translated = [
        {"language": language, "value": texts[text]}
        for language, texts in sorted(strings.items())
        if language != _DEFAULT_LANGUAGE and text in texts
    ]
    if translated:
        doc["translatedValues"] = translated
    return doc


def _is_key(text: str, strings: Mapping[str, Mapping[str, str]]) -> bool:
    return any(text in texts for texts in strings.values())


def _shown_value(item: PassField) -> str:
    if item.currency and isinstance(item.value, int | float):
        return f"{item.value:.2f} {item.currency}"
    if item.is_date:
        try:
            return datetime.fromisoformat(str(item.value)).date().isoformat()
        except ValueError:
            return str(item.value)
    return str(item.value)


def _text_module(item: PassField, strings: Mapping[str, Mapping[str, str]]) -> JsonObject:
    """A ``TextModuleData`` (id = the field key): the label as header, the value as body,
    both translated when they are keys of the pass strings."""
    header = localized_string(item.label or item.key, strings)
    module: JsonObject = {
        "id": item.key,
        "header": header["defaultValue"]["value"],
        "localizedHeader": header,
        "body": _shown_value(item),
    }
    if isinstance(item.value, str) and _is_key(item.value, strings):
        body = localized_string(item.value, strings)
        module["body"] = body["defaultValue"]["value"]
        module["localizedBody"] = body
    return module


def _fields(content: PassContent) -> list[PassField]:
    return [
        *content.header,
        *content.primary,
        *content.secondary,
        *content.auxiliary,
        *content.back,
    ]


def _field(content: PassContent, key: str) -> PassField | None:
    return next((item for item in _fields(content) if item.key == key), None)


def _points(item: PassField, strings: Mapping[str, Mapping[str, str]]) -> JsonObject:
    label = localized_string(item.label or item.key, strings)
    return {
        "label": label["defaultValue"]["value"],
        "localizedLabel": label,
        "balance": {"int": int(item.value)},
    }


def _money_points(item: PassField, strings: Mapping[str, Mapping[str, str]]) -> JsonObject:
    if not item.currency:
        raise ValueError(f"field {item.key!r} is a money balance and needs a currency")
    label = localized_string(item.label or item.key, strings)
    # Decimal, so 12.3 becomes exactly 12300000 micros.
    micros = int(Decimal(str(item.value)) * 1_000_000)
    return {
        "label": label["defaultValue"]["value"],
        "localizedLabel": label,
        "balance": {"money": {"micros": str(micros), "currencyCode": item.currency}},
    }


# Fields that become structured slots of the class or object instead of text modules.
_STRUCTURED_KEYS: Mapping[PassKind, frozenset[str]] = {
    PassKind.STORE_CARD: frozenset({"points", "cashback"}),
    PassKind.COUPON: frozenset({"offer", "expires"}),
    PassKind.EVENT_TICKET: frozenset({"event", "venue"}),
}


def google_class(
    content: PassContent, template: PassTemplate, issuer_id: str, *, logo_uri: str = ""
) -> JsonObject:
    """The class of the template's passes of ``content.kind``.

    A class is shared by every pass of the template and kind, so its background is the
    template's default-tier colour (per-pass colours go on objects that take one). A loyalty
    class needs ``logo_uri``, a public HTTPS image Google fetches (``programLogo``).
    """
    kind = content.kind
    resource_for(kind)
    strings = content.strings
    body: JsonObject = {
        "id": class_id(issuer_id, template.name, kind),
        "issuerName": template.organization_name,
        "reviewStatus": "UNDER_REVIEW",
        "hexBackgroundColor": _hex(template.colours(template.default_tier).background),
        "multipleDevicesAndHoldersAllowedStatus": (
            "ONE_USER_ALL_DEVICES" if template.sharing_prohibited else "MULTIPLE_HOLDERS"
        ),
    }
    logo = {"sourceUri": {"uri": logo_uri}} if logo_uri else None
    if kind is PassKind.STORE_CARD:
        if logo is None:
            raise ValueError("a loyalty class needs logo_uri (Google requires programLogo)")
        body["programName"] = template.logo_text or template.organization_name
        body["programLogo"] = logo
    elif kind is PassKind.COUPON:
        offer = _field(content, "offer")
        title = localized_string(str(offer.value) if offer else content.description, strings)
        body["title"] = title["defaultValue"]["value"]
        body["localizedTitle"] = title
        body["provider"] = template.organization_name
        body["redemptionChannel"] = "BOTH"
        if logo is not None:
            body["titleImage"] = logo
    else:
        event = _field(content, "event")
        body["eventName"] = localized_string(
            str(event.value) if event else content.description, strings
        )
        venue = _field(content, "venue")
        venue_name = str(venue.value) if venue else ""
        if not venue_name and content.places:
            venue_name = content.places[0].relevant_text
        if venue_name:
            body["venue"] = {"name": localized_string(venue_name, strings)}
        if content.relevant_dates:
            body["dateTime"] = {
                "start": _aware(content.relevant_dates[0]).isoformat(timespec="seconds")
            }
        if logo is not None:
            body["logo"] = logo
    return body


def _aware(at: datetime) -> datetime:
    # MongoDB hands back naive datetimes; they are UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def object_state(content: PassContent, now: datetime) -> str:
    """ACTIVE, INACTIVE once voided, EXPIRED once past its expiration."""
    if content.voided:
        return "INACTIVE"
    if content.expiration is not None and _aware(content.expiration) <= _aware(now):
        return "EXPIRED"
    return "ACTIVE"


def google_object(
    content: PassContent, issuer_id: str, class_id: str, *, now: datetime | None = None
) -> JsonObject:
    """The object of one pass: state, barcode, balances, texts and places."""
    kind = content.kind
    resource_for(kind)
    strings = content.strings
    body: JsonObject = {
        "id": object_id(issuer_id, content.serial_number),
        "classId": check_id(class_id),
        "state": object_state(content, now or datetime.now(UTC)),
        "barcode": {"type": "QR_CODE", "value": content.barcode_message},
    }
    structured = _STRUCTURED_KEYS[kind]
    if kind is PassKind.STORE_CARD:
        points = _field(content, "points")
        if points is not None:
            body["loyaltyPoints"] = _points(points, strings)
        cashback = _field(content, "cashback")
        if cashback is not None:
            body["secondaryLoyaltyPoints"] = _money_points(cashback, strings)
    if kind is PassKind.EVENT_TICKET:
        body["hexBackgroundColor"] = _hex(content.colours.background)
    if content.expiration is not None:
        body["validTimeInterval"] = {
            "end": {"date": _aware(content.expiration).isoformat(timespec="seconds")}
        }
    elif kind is PassKind.COUPON:
        structured = structured - {"expires"}  # no validTimeInterval shows it then
    modules = [
        _text_module(item, strings) for item in _fields(content) if item.key not in structured
    ]
    if modules:
        body["textModulesData"] = modules
    if content.places:
        body["merchantLocations"] = [
            {"latitude": place.latitude, "longitude": place.longitude}
            for place in content.places[:MAX_LOCATIONS]
        ]
    return body
