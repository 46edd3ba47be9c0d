"""Live updates against real servers: SecantusDB for the wallet's data, the loopback APNs
stand-in over TLS + HTTP/2, the Google Wallet stand-in over HTTP, and a simulated phone on the
PassKit web service. Profile changes, memberships, orders and survey answers go in through
the same handlers the Kafka consumers call; pushes come out through the dispatcher."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from google.auth import crypt
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.devapns import ApnsDevFiles, ensure_apns_dev_files
from infra.local.fake_apns import FakeApns
from infra.local.fake_google import (
    DEV_ISSUER_ID,
    FakeGoogleWallet,
    SigningAccount,
    ensure_google_dev_service_account,
)
from infra.local.servers import free_port
from lodestar.v1 import common_pb2, events_pb2, profile_pb2, wallet_pb2, wallet_pb2_grpc
from services.platform.errors import InvalidArgument
from services.platform.mongo import Document
from services.platform.rpc import GrpcServer
from services.wallet.api import WalletServicer
from services.wallet.applepass import PassSigner
from services.wallet.clients.apns import ApnsClient, ApnsCredentials
from services.wallet.clients.google import GoogleWalletClient, ServiceAccount
from services.wallet.delivery import Dispatcher
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.googlepasses import GooglePasses
from services.wallet.http import HttpServer
from services.wallet.live import LivePolicy, LiveUpdates
from services.wallet.offers import checked_offer
from services.wallet.passes import GOOGLE, WalletPasses
from services.wallet.records import StoredPass
from services.wallet.server import SERVICE_NAME
from services.wallet.store import WalletStore
from services.wallet.templates import PassKind
from services.wallet.webservice import PassKitWebService
from tests.support.kafka import eventually, unique
from tests.support.wallet import pass_field, pass_problems, unzip

PASS_TYPE_ID = "pass.com.example.lodestar.live"
TEAM_ID = "TEAMLIVE01"
KEY_ID = "LIVEKEY001"
DEVICE = "phone0123456789"
PUSH_TOKEN = "ab" * 32
GOLD = "rgb(190, 150, 40)"


@pytest.fixture(scope="module")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> SigningFiles:
    return ensure_dev_certificates(tmp_path_factory.mktemp("certs"), PASS_TYPE_ID, TEAM_ID)


@pytest.fixture(scope="module")
def apns_files(tmp_path_factory: pytest.TempPathFactory) -> ApnsDevFiles:
    return ensure_apns_dev_files(tmp_path_factory.mktemp("apns"), TEAM_ID, KEY_ID)


@pytest.fixture(scope="module")
def google_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_google_dev_service_account(
        tmp_path_factory.mktemp("google"), "http://127.0.0.1:1/token"
    )


@dataclass
class Feedback:
    """Records installed / removed reports (and announced pushes) instead of publishing them."""

    seen: list[tuple[str, str, str]] = field(default_factory=list)
    pushes: list[tuple[str, int]] = field(default_factory=list)

    async def pushed(self, doc: Mapping[str, Any]) -> None:
        self.pushes.append((doc["_id"], doc["update_seq"]))

    async def installed(self, doc: Mapping[str, Any], device_id: str) -> None:
        self.seen.append(("installed", doc["_id"], device_id))

    async def removed(self, doc: Mapping[str, Any], device_id: str, reason: str = "") -> None:
        self.seen.append(("removed", doc["_id"], reason))


@dataclass
class Live:
    passes: WalletPasses
    live: LiveUpdates
    apns: FakeApns
    google: FakeGoogleWallet
    phone: httpx.AsyncClient
    feedback: Feedback
    dispatcher: Dispatcher

    async def issue(
        self, customer: str, kind: PassKind = PassKind.STORE_CARD, **extra: str
    ) -> StoredPass:
        return await self.passes.issue(customer, kind, "default", **extra)

    async def register(self, doc: Mapping[str, Any], token: str = PUSH_TOKEN) -> None:
        response = await self.phone.post(
            f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}/{doc['_id']}",
            json={"pushToken": token},
            headers={"Authorization": f"ApplePass {doc['authentication_token']}"},
        )
        assert response.status_code == 201, response.text

    async def pass_json(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.phone.get(
            f"/v1/passes/{PASS_TYPE_ID}/{doc['_id']}",
            headers={"Authorization": f"ApplePass {doc['authentication_token']}"},
        )
        assert response.status_code == 200
        parsed: dict[str, Any] = json.loads(unzip(response.content)["pass.json"])
        assert pass_problems(parsed) == []
        return parsed

    async def pushed(self, doc: Mapping[str, Any]) -> bool:
        """True once the pass has no push pending (its last change went out)."""
        stored = await self.passes.get(doc["_id"])
        return "push_due" not in stored

    def pushes(self, token: str = PUSH_TOKEN) -> int:
        return sum(1 for p in self.apns.received if p.device_token == token and p.status == 200)


@pytest.fixture
async def live(
    client: AsyncIOMotorClient[Document],
    signing_files: SigningFiles,
    apns_files: ApnsDevFiles,
    google_key: Path,
) -> AsyncIterator[Live]:
    store = WalletStore(client[unique("wallet_live")])
    await store.ensure_indexes()
    signer = PassSigner.from_files(
        signing_files.certificate, signing_files.key, signing_files.intermediate
    )
    fake_apns = FakeApns.from_dev_files(apns_files, topics=[PASS_TYPE_ID])
    fake_google = FakeGoogleWallet(google_key)
    await fake_apns.start()
    await fake_google.start()
    apns = ApnsClient(
        fake_apns.url,
        ApnsCredentials.from_file(apns_files.auth_key, TEAM_ID, KEY_ID),
        ca_file=apns_files.ca_certificate,
        backoff_s=0.01,
    )
    google_api = GoogleWalletClient(
        fake_google.api_base_url,
        fake_google.token_uri,
        DEV_ISSUER_ID,
        ServiceAccount.from_file(google_key),
        backoff_s=0.01,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    google = GooglePasses(google_api, DEV_ISSUER_ID, url)
    passes = WalletPasses(store, signer, url, push_delay_s=0.3, google=google)
    feedback = Feedback()
    dispatcher = Dispatcher(store, apns, google, removed=feedback.removed, pushed=feedback.pushed)
    passes.on_push_scheduled(dispatcher.schedule)
    updates = LiveUpdates(passes, store, LivePolicy(marketing_per_day=1), flush=dispatcher.flush)
    http = HttpServer(PassKitWebService(passes, feedback).app, "127.0.0.1", port)
    await http.start()
    running = asyncio.create_task(dispatcher.run())
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as phone:
            yield Live(passes, updates, fake_apns, fake_google, phone, feedback, dispatcher)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await http.stop()
        await apns.aclose()
        await google_api.aclose()
        await fake_google.stop()
        await fake_apns.stop()


def changed(
    customer: str, tier: str, points: int, cashback_minor: int = 0, consent: str = ""
) -> events_pb2.ProfileChanged:
    change = events_pb2.ProfileChanged(
        event_id=unique("pc"),
        customer_id=customer,
        changed_paths=["loyalty"],
        loyalty=profile_pb2.Loyalty(
            points=points,
            tier=tier,
            cashback_balance=common_pb2.Money(currency="EUR", amount_minor=cashback_minor),
        ),
    )
    if consent:
        change.consent.append(profile_pb2.ConsentState(purpose="wallet_marketing", state=consent))
    return change


def track(customer: str, name: str, **properties: Any) -> events_pb2.Event:
    props = Struct()
    props.update(properties)
    return events_pb2.Event(
        event_id=unique("e"),
        type=events_pb2.EVENT_TYPE_TRACK,
        name=name,
        customer_id=customer,
        properties=props,
    )


def field_of(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    found = pass_field(dict(doc), key)
    assert found is not None, f"no field {key!r} in {doc}"
    return found


async def until(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    async def ready() -> bool:
        result = check()
        return bool(await result) if asyncio.iscoroutine(result) else bool(result)

    await eventually(ready, 10, what)


async def test_a_tier_upgrade_recolours_and_speaks_on_both_wallets(live: Live) -> None:
    customer = unique("c")
    card = await live.issue(customer)
    google_card = await live.issue(customer, platform=GOOGLE)
    await live.live.profile_changes([changed(customer, "Silver", 600, 1200)])
    card = await live.passes.get(card["_id"])
    await live.register(card)
    assert live.feedback.seen == [("installed", card["_id"], DEVICE)]
    before = await live.pass_json(card)
    assert field_of(before, "tier")["value"] == "Silver"
    assert field_of(before, "points")["value"] == 600

    await live.live.profile_changes([changed(customer, "Gold", 1600, 3200)])
    await until(lambda: live.pushes() == 1, "one push for the upgrade")
    after = await live.pass_json(card)
    assert after["backgroundColor"] == GOLD
    tier = field_of(after, "tier")
    assert tier["value"] == "Gold"
    assert tier["changeMessage"] == "Congratulations, you are now %@"
    assert field_of(after, "cashback")["value"] == 32.0

    google_id = google_card["google"]["object_id"]

    def google_said() -> list[str]:
        return [
            c["body"]["message"]["body"]
            for c in live.google.calls
            if c["path"].endswith(f"{google_id}/addMessage")
        ]

    await until(
        lambda: any("Congratulations, you are now Gold" in m for m in google_said()),
        "Google message",
    )
    # One message per push, the tier first.
    assert google_said()[-1].startswith("Congratulations, you are now Gold · ")
    stored = live.google.objects[google_id]
    assert stored["classId"].endswith("default-gold.storeCard")
    gold_class = live.google.classes[stored["classId"]]
    assert gold_class["hexBackgroundColor"] == "#be9628"
    patches = [c for c in live.google.calls if c["method"] == "PATCH" and google_id in c["path"]]
    assert patches
    assert all(c["notified"] for c in patches)

    # The same change again (a redelivery) changes nothing and pushes nothing: a later,
    # real change is the next push (pushes go out in the order they fall due).
    assert await live.live.profile_changes([changed(customer, "Gold", 1600, 3200)]) == 0
    await live.live.profile_changes([changed(customer, "Gold", 1700, 3200)])
    await until(
        lambda: any("1700 points" in m for m in google_said()), "the later change on Google"
    )
    await until(lambda: live.pushed(card), "the later change's push")
    assert live.pushes() == 2
    assert sum("now Gold" in m for m in google_said()) == 1


async def test_changes_within_the_window_give_one_push(live: Live) -> None:
    customer = unique("c")
    card = await live.issue(customer)
    await live.register(card)
    for points in range(10, 60, 10):
        await live.live.profile_changes([changed(customer, "Bronze", points)])
    await until(lambda: live.pushes() >= 1, "a push")
    assert field_of(await live.pass_json(card), "points")["value"] == 50
    # A change after the burst's push is the second push: the burst gave one.
    await live.live.profile_changes([changed(customer, "Bronze", 99)])

    await until(lambda: live.pushed(card), "the later change's push")
    assert live.pushes() == 2
    # Each push that reached the phone was announced once, for the version it carried.
    announced = [seq for serial, seq in live.feedback.pushes if serial == card["_id"]]
    assert len(announced) == 2
    assert announced == sorted(set(announced))


async def test_a_push_that_reaches_no_device_is_not_announced(live: Live) -> None:
    customer = unique("c")
    card = await live.issue(customer)
    await live.live.profile_changes([changed(customer, "Silver", 700)])
    await until(lambda: live.pushed(card), "the change handled")
    assert [s for s, _ in live.feedback.pushes if s == card["_id"]] == []


async def test_orders_speak_and_shipping_tells_the_delivery_window(live: Live) -> None:
    customer = unique("c")
    card = await live.issue(customer)
    await live.register(card)
    await live.live.events([track(customer, "Order Completed", order_id="o-1", total=40)])
    await until(lambda: live.pushes() == 1, "the order push")
    status = field_of(await live.pass_json(card), "status")
    assert status["value"] == "Order processed"
    assert status["changeMessage"] == "%@"

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    start = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, tzinfo=UTC)
    await live.live.events(
        [
            track(
                customer,
                "Order Shipped",
                order_id="o-1",
                delivery_start=start.isoformat(),
                delivery_end=(start + timedelta(hours=2)).isoformat(),
            )
        ]
    )
    await until(lambda: live.pushes() == 2, "the shipping push")
    status = field_of(await live.pass_json(card), "status")
    assert status["value"] == "Your order arrives tomorrow between 10:00 and 12:00"
    # Events the wallet does not act on cost nothing.
    assert await live.live.events([track(customer, "Product Viewed", product_id="p")]) == 0


async def test_segment_offers_need_consent_and_respect_the_daily_cap(live: Live) -> None:
    silent, consenting = unique("c"), unique("c")
    for offer_id, segment in (("o-a", "seg-a"), ("o-b", "seg-b")):
        await live.passes.store.put_offer(checked_offer(offer_id, segment, f"Offer {offer_id}"))
    await live.live.profile_changes([changed(silent, "Gold", 10, consent="denied")])
    await live.live.profile_changes([changed(consenting, "Gold", 10, consent="granted")])
    cards = {c: await live.issue(c) for c in (silent, consenting)}

    def entered(customer: str, segment: str) -> events_pb2.SegmentMembershipChanged:
        return events_pb2.SegmentMembershipChanged(
            event_id=unique("m"),
            customer_id=customer,
            segment_id=segment,
            change=events_pb2.MEMBERSHIP_CHANGE_ENTERED,
        )

    await live.live.memberships([entered(silent, "seg-a"), entered(consenting, "seg-a")])
    silent_offers = field_of(await live.pass_json(cards[silent]), "offers")
    assert silent_offers["value"] == "Offer o-a"
    assert "changeMessage" not in silent_offers  # shown, but not on the lock screen
    spoken = field_of(await live.pass_json(cards[consenting]), "offers")
    assert spoken["changeMessage"] == "%@"

    # A second offer the same day is over the cap of one: it appears silently.
    await live.live.memberships([entered(consenting, "seg-b")])
    capped = field_of(await live.pass_json(cards[consenting]), "offers")
    assert capped["value"] == "Offer o-a; Offer o-b"
    assert "changeMessage" not in capped
    # Leaving the segment takes the offer off the card.
    left = events_pb2.SegmentMembershipChanged(
        event_id=unique("m"),
        customer_id=consenting,
        segment_id="seg-a",
        change=events_pb2.MEMBERSHIP_CHANGE_EXITED,
    )
    await live.live.memberships([left])
    assert field_of(await live.pass_json(cards[consenting]), "offers")["value"] == "Offer o-b"
    # Marketing messages obey the same cap; transactional ones always go.
    assert await live.live.send_message("", consenting, "News", "Spring sale", True) == (
        0,
        "frequency cap reached (1 per day)",
    )
    assert await live.live.send_message("", silent, "News", "Spring sale", True) == (
        0,
        "no wallet_marketing consent",
    )
    assert await live.live.send_message("", silent, "Order", "Ready for pickup", False) == (1, "")


async def test_a_survey_answer_turns_the_offer_into_a_ticket_reminded_the_day_before(
    live: Live,
) -> None:
    customer = unique("c")
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=20)
    event = {
        "name": "Private presentation",
        "venue": "Flagship store",
        "latitude": 40.4168,
        "longitude": -3.7038,
        "starts_at": starts,
    }
    offer_id = unique("offer")
    await live.passes.store.put_offer(
        checked_offer(offer_id, "seg-x", "Private presentation: 20% off", event=event)
    )
    offer_pass = await live.issue(customer, PassKind.COUPON, offer_id=offer_id)
    await live.register(offer_pass)
    assert (await live.pass_json(offer_pass))["coupon"]

    await live.live.events([track(customer, "Survey Answered", offer_id=offer_id, answer="yes")])
    await until(lambda: live.pushes() == 1, "the ticket push")
    ticket = await live.pass_json(offer_pass)
    assert "eventTicket" in ticket
    assert field_of(ticket, "event")["value"] == "Private presentation"
    assert ticket["relevantDate"] == starts.isoformat()
    assert ticket["locations"] == [
        {
            "latitude": 40.4168,
            "longitude": -3.7038,
            "relevantText": "Private presentation at Flagship store",
        }
    ]
    # Within a day of the event: the reminder goes now, once.
    assert await live.live.reminders() == 1
    assert await live.live.reminders() == 0
    await until(lambda: live.pushes() == 2, "the reminder push")
    status = field_of(await live.pass_json(offer_pass), "status")
    day = "today" if starts.date() == datetime.now(UTC).date() else "tomorrow"
    assert status["value"] == f"Reminder: Private presentation is {day} at {starts:%H:%M}"


async def test_apns_410_deletes_the_registration_and_reports_the_removal(live: Live) -> None:
    customer = unique("c")
    card = await live.issue(customer)
    await live.register(card, token="cd" * 32)
    live.apns.stand_in.unregister("cd" * 32)
    await live.live.profile_changes([changed(customer, "Silver", 700)])
    await until(
        lambda: ("removed", card["_id"], "apns_unregistered") in live.feedback.seen, "removal"
    )
    assert await live.passes.store.registrations_of(card["_id"]) == []


async def test_erasure_voids_and_pushes_then_forgets(live: Live) -> None:
    customer = unique("c")
    card = await live.issue(customer)
    await live.register(card)
    exported = await live.live.export(customer)
    assert [p["serial_number"] for p in exported["passes"]] == [card["_id"]]
    await live.live.erase(customer)
    assert live.pushes() == 1  # pushed before the registration went
    voided = await live.pass_json(card)
    assert voided["voided"] is True
    assert await live.passes.store.registrations_of(card["_id"]) == []
    assert (await live.live.export(customer))["passes"] == []
    await live.live.erase(customer)  # a redelivered request is fine


async def test_update_pass_validates_and_pushes(live: Live) -> None:
    customer = unique("c")
    card = await live.issue(customer)
    await live.register(card)
    updated = await live.passes.update(card["_id"], {"status": "See you soon", "tier": "Gold"})
    assert updated["fields"]["status"] == "See you soon"
    await until(lambda: live.pushes() == 1, "the update push")
    for bad, message in (
        ({"colour": "red"}, "fields.colour is not a pass field"),
        ({"points": "many"}, "fields.points must be a whole number"),
        ({"tier": "Diamond"}, "fields.tier must be one of"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            await live.passes.update(card["_id"], bad)


async def test_a_google_offer_pass_gets_a_ticket_object_of_its_own(live: Live) -> None:
    customer = unique("c")
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    offer_id = unique("offer")
    event = {
        "name": "Tasting",
        "venue": "Cellar",
        "latitude": 41.0,
        "longitude": 2.0,
        "starts_at": starts,
    }
    await live.passes.store.put_offer(checked_offer(offer_id, "seg-y", "Tasting", event=event))
    offer_pass = await live.issue(customer, PassKind.COUPON, platform=GOOGLE, offer_id=offer_id)
    offer_object = offer_pass["google"]["object_id"]
    assert live.google.objects[offer_object]["classId"].endswith(".default.coupon")

    await live.live.events([track(customer, "Survey Answered", offer_id=offer_id)])
    ticket_object = f"{offer_object}.eventTicket"
    await until(
        lambda: live.google.objects[offer_object]["state"] == "COMPLETED", "the offer completed"
    )
    ticket = live.google.objects[ticket_object]
    assert ticket["classId"].endswith(".default.eventTicket")
    offer = live.google.objects[offer_object]
    links = offer["linksModuleData"]["uris"]
    assert links[0]["uri"].startswith("https://pay.google.com/gp/v/save/")

    async def stored_as_ticket() -> bool:
        stored = await live.passes.get(offer_pass["_id"])
        return bool(stored["google"]["object_id"] == ticket_object)

    await until(stored_as_ticket, "the pass pointing at its ticket object")


def verifies(token: str, account: SigningAccount) -> bool:
    """True when the JWT's RS256 signature checks out with the service account's public key."""
    key = serialization.load_pem_private_key(account.private_key.encode(), None)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed, _, signature = token.rpartition(".")
    verifier = crypt.RSAVerifier.from_string(pem)  # type: ignore[no-untyped-call]
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return bool(verifier.verify(signed.encode(), raw))


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def test_list_passes_signs_each_save_link_once(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = [unique("c") for _ in range(3)]
    issued = [
        await live.issue(customer, kind, platform=GOOGLE)
        for customer in customers
        for kind in (PassKind.STORE_CARD, PassKind.EVENT_TICKET) * 6
    ]
    signed: list[str] = []
    sign = ServiceAccount.sign

    def counted(account: ServiceAccount, claims: Mapping[str, Any]) -> str:
        if claims.get("typ") == "savetowallet":
            signed.append(claims["payload"])
        return sign(account, claims)

    monkeypatch.setattr(ServiceAccount, "sign", counted)
    server = GrpcServer(
        "127.0.0.1",
        0,
        [SERVICE_NAME],
        lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(
            WalletServicer(live.passes, live.live), s
        ),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = wallet_pb2_grpc.WalletServiceStub(channel)
            request = wallet_pb2.ListPassesRequest(customer_ids=customers)
            first = await stub.ListPasses(request)
            second = await stub.ListPasses(request)
    finally:
        await server.stop(0)
    links = {p.serial_number: p.save_link for c in first.customers for p in c.passes}
    assert len(links) == len(issued) == 36
    assert {p.serial_number: p.save_link for c in second.customers for p in c.passes} == links
    assert len(signed) <= len(issued), "a save link was signed more than once"
    for doc in issued:
        token = links[doc["_id"]].removeprefix("https://pay.google.com/gp/v/save/")
        assert verifies(token, live.google.account)  # the key the stand-in knows
        payload = claims_of(token)["payload"]
        resource = doc["google"]["resource"]
        assert payload == {f"{resource}Objects": [{"id": doc["google"]["object_id"]}]}
