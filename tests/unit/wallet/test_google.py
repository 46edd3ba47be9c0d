"""Google Wallet bodies and JWTs: class and object of every kind built from the pass the Apple
side renders (colours, points and cashback, English and Spanish texts, event name, venue and
date, state), ids checked, the token assertion's claims, and a save link whose JWT verifies
with the service account's public key and names only object ids."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import crypt
from google.auth import jwt as google_jwt

from infra.local.fake_google import ensure_google_dev_service_account
from services.wallet.applepass import PassContent, PassField
from services.wallet.clients.google import (
    SAVE_LINK_REUSE_S,
    SAVE_URL_BASE,
    TOKEN_URI,
    WALLET_SCOPE,
    GoogleWalletClient,
    ServiceAccount,
    save_jwt,
    token_assertion,
)
from services.wallet.google import (
    TEXT_AND_NOTIFY,
    Resource,
    class_id,
    google_class,
    google_object,
    object_id,
    object_state,
    resource_for,
    text_message,
)
from services.wallet.passes import pass_content
from services.wallet.records import NewPass
from services.wallet.templates import DEFAULT_TEMPLATE, PassKind, Place

ISSUER = "3388000000012345678"
LOGO = "https://cdn.example.com/lodestar-logo.png"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
EVENT_AT = datetime(2026, 12, 1, 18, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> ServiceAccount:
    """A throwaway service-account key."""
    folder = tmp_path_factory.mktemp("google-key")
    return ServiceAccount.from_file(ensure_google_dev_service_account(folder, TOKEN_URI))


def public_pem(account: ServiceAccount) -> str:
    key = serialization.load_pem_private_key(account.private_key.encode(), None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")

    def part(raw: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return decoded

    return part(header), part(payload)


def signature_valid(token: str, account: ServiceAccount) -> bool:
    signed, _, signature = token.rpartition(".")
    verifier = crypt.RSAVerifier.from_string(public_pem(account))  # type: ignore[no-untyped-call]
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return bool(verifier.verify(signed.encode(), raw))


def stored_pass(kind: PassKind, **changes: Any) -> dict[str, Any]:
    """A pass document as the wallet stores it: a Gold member with 120 points, 12.50 EUR."""
    doc: dict[str, Any] = {
        "_id": f"serial-{kind.value}",
        "kind": kind.value,
        "template": "default",
        "authentication_token": "t" * 43,
        "fields": {"tier": "Gold", "points": 120, "cashback_minor": 1250},
        "relevant_dates": [EVENT_AT],
    }
    if kind is PassKind.COUPON:
        doc["expires_at"] = NOW + timedelta(days=30)
    doc.update(changes)
    return doc


def content(kind: PassKind, **changes: Any) -> PassContent:
    doc = cast(NewPass, stored_pass(kind, **changes))
    return pass_content(doc, "https://wallet.example.com/passkit")


def module(body: dict[str, Any], key: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in body.get("textModulesData", []) if m["id"] == key]
    assert len(found) == 1, f"expected one text module {key!r} in {body.get('textModulesData')}"
    return found[0]


def spanish(localized: dict[str, Any]) -> str:
    return str(next(t["value"] for t in localized["translatedValues"] if t["language"] == "es"))


# --- ids ---


def test_ids_are_issuer_qualified() -> None:
    assert class_id(ISSUER, "default", PassKind.STORE_CARD) == f"{ISSUER}.default.storeCard"
    assert object_id(ISSUER, "3f2a_b-9.x") == f"{ISSUER}.3f2a_b-9.x"


@pytest.mark.parametrize(
    ("issuer", "suffix"),
    [(ISSUER, "has space"), (ISSUER, "a/b"), (ISSUER, ""), (ISSUER, "ñ"), ("issuer", "abc")],
)
def test_bad_ids_are_refused(issuer: str, suffix: str) -> None:
    with pytest.raises(ValueError, match=r"issuer id|id suffix"):
        object_id(issuer, suffix)


def test_kinds_map_to_google_pass_types() -> None:
    assert resource_for(PassKind.STORE_CARD) == "loyalty"
    assert resource_for(PassKind.COUPON) == "offer"
    assert resource_for(PassKind.EVENT_TICKET) == "eventTicket"
    with pytest.raises(ValueError, match="generic"):
        resource_for(PassKind.GENERIC)
    with pytest.raises(ValueError, match="generic"):
        google_object(content(PassKind.GENERIC), ISSUER, f"{ISSUER}.default.generic")


# --- store card ---


def test_loyalty_class_carries_the_brand() -> None:
    body = google_class(content(PassKind.STORE_CARD), DEFAULT_TEMPLATE, ISSUER, logo_uri=LOGO)
    assert body["id"] == f"{ISSUER}.default.storeCard"
    assert body["issuerName"] == "Lodestar"
    assert body["programName"] == "Lodestar"
    assert body["programLogo"] == {"sourceUri": {"uri": LOGO}}
    assert body["reviewStatus"] == "UNDER_REVIEW"
    # The class is shared by every tier: the default tier's colour (Bronze), not Gold's.
    assert body["hexBackgroundColor"] == "#8c5a32"
    assert body["multipleDevicesAndHoldersAllowedStatus"] == "ONE_USER_ALL_DEVICES"


def test_loyalty_class_needs_a_logo() -> None:
    with pytest.raises(ValueError, match="logo_uri"):
        google_class(content(PassKind.STORE_CARD), DEFAULT_TEMPLATE, ISSUER)


def test_loyalty_object_balances_and_translations() -> None:
    pass_ = content(PassKind.STORE_CARD)
    body = google_object(pass_, ISSUER, f"{ISSUER}.default.storeCard", now=NOW)
    assert body["id"] == f"{ISSUER}.serial-storeCard"
    assert body["classId"] == f"{ISSUER}.default.storeCard"
    assert body["state"] == "ACTIVE"
    assert body["barcode"] == {"type": "QR_CODE", "value": "serial-storeCard"}
    points = body["loyaltyPoints"]
    assert points["balance"] == {"int": 120}
    assert points["label"] == "Points"
    assert points["localizedLabel"]["defaultValue"] == {"language": "en", "value": "Points"}
    assert spanish(points["localizedLabel"]) == "Puntos"
    cashback = body["secondaryLoyaltyPoints"]
    assert cashback["balance"] == {"money": {"micros": "12500000", "currencyCode": "EUR"}}
    assert spanish(cashback["localizedLabel"]) == "Saldo cashback"
    # Balances live in their slots, everything else (tier, terms) in text modules.
    assert [m["id"] for m in body["textModulesData"]] == ["tier", "terms"]
    tier = module(body, "tier")
    assert (tier["header"], tier["body"]) == ("Tier", "Gold")
    assert spanish(tier["localizedHeader"]) == "Nivel"
    terms = module(body, "terms")
    assert terms["body"] == "Points and cashback follow the programme terms."
    assert spanish(terms["localizedBody"]).startswith("Los puntos y el cashback")
    assert body["merchantLocations"] == [{"latitude": 40.4168, "longitude": -3.7038}]
    assert "hexBackgroundColor" not in body  # loyalty objects take no colour of their own


def test_cashback_is_exact_in_micros() -> None:
    body = google_object(
        content(PassKind.STORE_CARD, fields={"points": 0, "cashback_minor": 201}),
        ISSUER,
        f"{ISSUER}.default.storeCard",
    )
    assert body["secondaryLoyaltyPoints"]["balance"]["money"]["micros"] == "2010000"


def test_money_balance_needs_a_currency() -> None:
    pass_ = content(PassKind.STORE_CARD)
    no_currency = replace(pass_, primary=[PassField("cashback", 3.5, "cashback")])
    with pytest.raises(ValueError, match="currency"):
        google_object(no_currency, ISSUER, f"{ISSUER}.default.storeCard")


# --- coupon ---


def test_offer_class_and_object() -> None:
    pass_ = content(PassKind.COUPON)
    klass = google_class(pass_, DEFAULT_TEMPLATE, ISSUER)
    assert klass["id"] == f"{ISSUER}.default.coupon"
    assert klass["title"] == "Member offer"
    assert spanish(klass["localizedTitle"]) == "Oferta para socios"
    assert klass["provider"] == "Lodestar"
    assert klass["redemptionChannel"] == "BOTH"
    body = google_object(pass_, ISSUER, klass["id"], now=NOW)
    assert body["state"] == "ACTIVE"
    assert body["validTimeInterval"] == {"end": {"date": "2026-12-01T12:00:00+00:00"}}
    # The offer is the class title and the expiry the valid interval: no duplicate modules.
    assert [m["id"] for m in body["textModulesData"]] == ["terms"]


def test_offer_expires() -> None:
    pass_ = content(PassKind.COUPON)
    later = NOW + timedelta(days=31)
    assert google_object(pass_, ISSUER, f"{ISSUER}.default.coupon", now=later)["state"] == "EXPIRED"


def test_expiry_stored_without_timezone_is_utc() -> None:
    naive = content(PassKind.COUPON, expires_at=datetime(2026, 12, 1, 12, 0))
    assert object_state(naive, datetime(2026, 12, 1, 11, 59, tzinfo=UTC)) == "ACTIVE"
    assert object_state(naive, datetime(2026, 12, 1, 12, 1, tzinfo=UTC)) == "EXPIRED"


def test_voided_is_inactive_even_when_expired() -> None:
    pass_ = content(PassKind.COUPON, voided=True)
    assert google_object(pass_, ISSUER, f"{ISSUER}.default.coupon", now=NOW)["state"] == "INACTIVE"
    assert object_state(pass_, NOW + timedelta(days=365)) == "INACTIVE"
    store_card = content(PassKind.STORE_CARD, voided=True)
    assert (
        google_object(store_card, ISSUER, f"{ISSUER}.default.storeCard", now=NOW)["state"]
        == "INACTIVE"
    )


# --- event ticket ---


def test_event_class_name_venue_and_date() -> None:
    pass_ = content(PassKind.EVENT_TICKET)
    body = google_class(pass_, DEFAULT_TEMPLATE, ISSUER)
    assert body["id"] == f"{ISSUER}.default.eventTicket"
    assert body["eventName"]["defaultValue"] == {"language": "en", "value": "Member event"}
    assert spanish(body["eventName"]) == "Evento para socios"
    # No venue field: the first place's text names it.
    assert body["venue"]["name"]["defaultValue"]["value"] == "Our flagship store is nearby"
    assert body["dateTime"] == {"start": "2026-12-01T18:30:00+00:00"}


def test_event_venue_field_wins_over_places() -> None:
    pass_ = content(PassKind.EVENT_TICKET)
    with_venue = replace(
        pass_,
        secondary=[*pass_.secondary, PassField("venue", "Teatro Real", "venue")],
        places=(Place(40.418, -3.711, "Near the theatre"),),
        relevant_dates=(),
    )
    body = google_class(with_venue, DEFAULT_TEMPLATE, ISSUER)
    assert body["venue"]["name"]["defaultValue"]["value"] == "Teatro Real"
    assert "dateTime" not in body
    obj = google_object(with_venue, ISSUER, body["id"], now=NOW)
    assert [m["id"] for m in obj["textModulesData"]] == ["date", "terms"]


def test_event_object_takes_the_tier_colour() -> None:
    body = google_object(
        content(PassKind.EVENT_TICKET), ISSUER, f"{ISSUER}.default.eventTicket", now=NOW
    )
    assert body["hexBackgroundColor"] == "#be9628"  # Gold
    silver = content(PassKind.EVENT_TICKET, fields={"tier": "Silver"})
    assert (
        google_object(silver, ISSUER, f"{ISSUER}.default.eventTicket", now=NOW)[
            "hexBackgroundColor"
        ]
        == "#78828c"
    )


# --- JWTs ---


def test_token_assertion_claims(account: ServiceAccount) -> None:
    now = time.time()
    token = token_assertion(account, "http://127.0.0.1:9/token", now)
    header, _ = segments(token)
    assert header == {"typ": "JWT", "alg": "RS256", "kid": account.private_key_id}
    claims = google_jwt.decode(  # type: ignore[no-untyped-call]
        token,
        certs={account.private_key_id: public_pem(account)},
        audience="http://127.0.0.1:9/token",
    )
    assert claims["iss"] == account.client_email
    assert claims["scope"] == WALLET_SCOPE
    assert claims["iat"] == int(now)
    assert claims["exp"] == int(now) + 3600


async def test_save_link_holds_only_object_ids(account: ServiceAccount) -> None:
    client = GoogleWalletClient(
        "http://unused", TOKEN_URI, ISSUER, account, clock=lambda: 1_800_000_000
    )
    await client.aclose()  # a save link is signed locally, without a call
    loyalty = object_id(ISSUER, "card-1")
    offer = object_id(ISSUER, "offer-1")
    link = client.save_link(
        [("loyalty", loyalty), ("offer", offer)], origins=["https://shop.example.com"]
    )
    assert link.startswith(SAVE_URL_BASE)
    token = link.removeprefix(SAVE_URL_BASE)
    assert signature_valid(token, account)
    header, claims = segments(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == account.private_key_id
    assert claims == {
        "iss": account.client_email,
        "aud": "google",
        "typ": "savetowallet",
        "iat": 1_800_000_000,
        "origins": ["https://shop.example.com"],
        "payload": {"loyaltyObjects": [{"id": loyalty}], "offerObjects": [{"id": offer}]},
    }


async def test_a_save_link_is_signed_once_and_renewed_after_the_reuse_window(
    account: ServiceAccount,
) -> None:
    now = [1_800_000_000.0]
    client = GoogleWalletClient("http://unused", TOKEN_URI, ISSUER, account, clock=lambda: now[0])
    await client.aclose()
    card: list[tuple[Resource, str]] = [("loyalty", object_id(ISSUER, "card-1"))]
    first = client.save_link(card)
    now[0] += SAVE_LINK_REUSE_S - 1
    assert client.save_link(card) == first  # the same objects: the link signed before
    other = client.save_link([("loyalty", object_id(ISSUER, "card-2"))])
    assert other != first
    assert segments(other.removeprefix(SAVE_URL_BASE))[1]["payload"] == {
        "loyaltyObjects": [{"id": object_id(ISSUER, "card-2")}]
    }
    now[0] += 1
    renewed = client.save_link(card)
    assert renewed != first
    token = renewed.removeprefix(SAVE_URL_BASE)
    assert signature_valid(token, account)
    assert segments(token)[1]["iat"] == int(now[0])


def test_a_tampered_save_link_does_not_verify(account: ServiceAccount) -> None:
    token = save_jwt(account, [("loyalty", object_id(ISSUER, "card-1"))], (), time.time())
    header, _, signature = token.split(".")
    forged = (
        base64.urlsafe_b64encode(
            json.dumps({"payload": {"loyaltyObjects": [{"id": f"{ISSUER}.someone-else"}]}}).encode()
        )
        .decode()
        .rstrip("=")
    )
    assert signature_valid(token, account)
    assert not signature_valid(f"{header}.{forged}.{signature}", account)


def test_save_link_refuses_bad_objects(account: ServiceAccount) -> None:
    with pytest.raises(ValueError, match="at least one"):
        save_jwt(account, [], (), 0)
    with pytest.raises(ValueError, match="id suffix"):
        save_jwt(account, [("loyalty", f"{ISSUER}.bad id")], (), 0)
    with pytest.raises(ValueError, match="unknown Google Wallet resource"):
        save_jwt(account, [("generic", f"{ISSUER}.x")], (), 0)  # type: ignore[list-item]


# --- keys and messages ---


def test_service_account_file_problems_name_the_file(
    tmp_path: Path, account: ServiceAccount
) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        ServiceAccount.from_file(bad_json)
    user_key = tmp_path / "user.json"
    user_key.write_text(json.dumps({"type": "authorized_user"}))
    with pytest.raises(ValueError, match="not a service account key"):
        ServiceAccount.from_file(user_key)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"type": "service_account", "client_email": "a@b"}))
    with pytest.raises(ValueError, match="private_key_id, private_key"):
        ServiceAccount.from_file(partial)
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    ec_key = tmp_path / "ec.json"
    ec_key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "a@b",
                "private_key_id": "k",
                "private_key": ec_pem,
            }
        )
    )
    with pytest.raises(ValueError, match="RSA"):
        ServiceAccount.from_file(ec_key)
    assert "PRIVATE KEY" not in repr(account)


def test_messages_notify_by_default() -> None:
    assert text_message("Gold!", "You reached Gold", "tier-gold") == {
        "id": "tier-gold",
        "header": "Gold!",
        "body": "You reached Gold",
        "messageType": TEXT_AND_NOTIFY,
    }
    assert text_message("h", "b", "m", notify=False)["messageType"] == "TEXT"
    with pytest.raises(ValueError, match="id"):
        text_message("h", "b", "")
