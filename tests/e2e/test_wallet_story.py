"""The wallet story, played through the whole running platform.

A customer holds the brand's loyalty card in Apple Wallet (a simulated phone on the PassKit
web service) and another in Google Wallet. Events go in through the ingest API only; what
the phones are told is read from the loopback APNs and Google Wallet stand-ins.

1. Enough purchases lift the tier from Silver to Gold: the card turns gold and the lock
   screen says "Congratulations, you are now Gold" (Apple and Google).
2. An online order: the card shows "Order processed", then a push says the order arrives
   tomorrow between 10 and 12.
3. The card offers a private presentation with 20% off for answering a survey; when the
   answer arrives the offer pass becomes the event's ticket, with the venue as its relevant
   location and the start as its relevant date, and a push reminds the customer the day
   before.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from infra.local.stack import DEV_PASS_TYPE_ID, Stack
from lodestar.v1 import segmentation_pb2, segmentation_pb2_grpc, wallet_pb2, wallet_pb2_grpc
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform
from tests.support.wallet import Phone, lock_screen_text, pass_field

pytestmark = pytest.mark.e2e

GOLD_BACKGROUND = "rgb(190, 150, 40)"
SILVER_BACKGROUND = "rgb(120, 130, 140)"


class StandIns:
    """What the loopback APNs and Google Wallet stand-ins received."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.apns = httpx.AsyncClient(
            base_url=stack.apns_url, verify=ssl.create_default_context(cafile=stack.apns_ca)
        )
        self.google = httpx.AsyncClient(base_url=stack.google_url)

    async def pushes(self, device_token: str) -> list[dict[str, Any]]:
        response = await self.apns.get("/fake/pushes", params={"device_token": device_token})
        body = response.json()
        assert body["stand_in"] is True
        return [p for p in body["pushes"] if p["status"] == 200]

    async def google_calls(self, object_id: str) -> list[dict[str, Any]]:
        body = (await self.google.get("/fake/calls")).json()
        return [c for c in body["calls"] if object_id in c["path"]]

    async def google_object(self, object_id: str) -> dict[str, Any]:
        response = await self.google.get(f"/fake/objects/{object_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        stored: dict[str, Any] = found.get("object", found)
        return stored

    async def close(self) -> None:
        await self.apns.aclose()
        await self.google.aclose()


def order(user: str, n: int, total: float) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": "Order Completed",
        "messageId": f"{user}-order-{n}",
        "properties": {"order_id": f"{user}-o{n}", "total": total, "currency": "EUR"},
    }


def stamp(at: datetime) -> Timestamp:
    made = Timestamp()
    made.FromDatetime(at)
    return made


async def test_the_wallet_story(platform: Platform, tmp_path: Path) -> None:
    stack = platform.stack
    user = unique("story")
    token = "5a" * 32
    customer_id = await platform.known_customer(user, email=f"{user}@example.com")
    consent = {
        "type": "track",
        "userId": user,
        "event": "Consent Updated",
        "messageId": f"{user}-consent",
        "properties": {"purpose": "wallet_marketing", "state": "granted"},
    }
    assert (
        await platform.send("/v1/batch", {"batch": [consent, order(user, 1, 600.0)]})
    ).is_success
    await platform.wait_for_count(user, "Order Completed", 1)

    starts = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=20)
    segment_id, offer_id = unique("gold"), unique("presentation")
    channel = stack.grpc_channel("wallet")
    segments = stack.grpc_channel("segmentation")
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    stand_ins = StandIns(stack)
    try:
        await segmentation_pb2_grpc.SegmentationServiceStub(segments).CreateSegment(
            segmentation_pb2.CreateSegmentRequest(
                id=segment_id,
                name="Gold members",
                rule_json=json.dumps({"field": "loyalty.tier", "op": "eq", "value": "Gold"}),
            )
        )
        await wallet.PutOffer(
            wallet_pb2.Offer(
                offer_id=offer_id,
                segment_id=segment_id,
                title="Private presentation: 20% off for answering our survey",
                survey_url="https://survey.example.com/presentation",
                event=wallet_pb2.OfferEvent(
                    name="Private presentation",
                    venue="Flagship store",
                    latitude=40.4168,
                    longitude=-3.7038,
                    starts_at=stamp(starts),
                ),
            )
        )
        card = await wallet.IssuePass(
            wallet_pb2.IssuePassRequest(
                customer_id=customer_id,
                kind=wallet_pb2.PASS_KIND_STORE_CARD,
                platform=wallet_pb2.WALLET_PLATFORM_APPLE,
            )
        )
        google_card = await wallet.IssuePass(
            wallet_pb2.IssuePassRequest(
                customer_id=customer_id,
                kind=wallet_pb2.PASS_KIND_STORE_CARD,
                platform=wallet_pb2.WALLET_PLATFORM_GOOGLE,
            )
        )
        assert google_card.save_link.startswith(f"{stack.google_url}/save/")
        link = await wallet.GetSaveLink(
            wallet_pb2.GetSaveLinkRequest(serial_number=google_card.serial_number)
        )
        assert link.url.startswith(f"{stack.google_url}/save/")
        google_id = google_card.google_object_id

        async def silver() -> bool:
            got = await wallet.GetPass(wallet_pb2.GetPassRequest(serial_number=card.serial_number))
            return got.fields["tier"] == "Silver"

        await until(silver, "the card showing the Silver tier of the first order")

        async with httpx.AsyncClient(base_url=card.web_service_url, timeout=10) as http:
            phone = Phone(
                http, unique("iphone"), token, stack.wallet_certs_dir / "wwdr.pem", tmp_path
            )
            assert (
                await phone.add(DEV_PASS_TYPE_ID, card.serial_number, card.authentication_token)
                == 201
            )
            assert await phone.changed_serials(DEV_PASS_TYPE_ID) == [card.serial_number]
            shown = await phone.fetch(
                DEV_PASS_TYPE_ID, card.serial_number, card.authentication_token
            )
            # Installing the card reaches the profile through the serial it was linked with.
            await platform.wait_for_count(user, "Wallet Pass Installed", 1)
            assert (pass_field(shown, "tier") or {}).get("value") == "Silver"
            assert shown["backgroundColor"] == SILVER_BACKGROUND

            async def after_push(
                before: int,
                serial: str,
                auth: str,
                check: Callable[[dict[str, Any]], bool],
                what: str,
            ) -> dict[str, Any]:
                """Wait for a push after the ``before``-th, then do what the phone does: ask
                what changed and fetch it, until the pass shows what ``check`` wants."""
                seen: dict[str, Any] = {}

                async def arrived() -> bool:
                    if len(await stand_ins.pushes(token)) <= before:
                        return False
                    # The phone fetches what changed since its last tag (on the first look,
                    # the pass as it is: an earlier fetch may already hold this change).
                    if serial in await phone.changed_serials(DEV_PASS_TYPE_ID) or not seen:
                        seen.clear()
                        seen.update(await phone.fetch(DEV_PASS_TYPE_ID, serial, auth))
                    return check(seen)

                await eventually(arrived, 60, what, 0.3)
                return seen

            # (1) Silver -> Gold.
            before_gold = len(await stand_ins.pushes(token))
            assert (await platform.send("/v1/track", order(user, 2, 1000.0))).is_success
            gold = await after_push(
                before_gold,
                card.serial_number,
                card.authentication_token,
                lambda doc: (pass_field(doc, "tier") or {}).get("value") == "Gold",
                "the card turning Gold",
            )
            assert gold["backgroundColor"] == GOLD_BACKGROUND
            assert lock_screen_text(gold, "tier") == "Congratulations, you are now Gold"

            async def google_says(text: str) -> bool:
                calls = await stand_ins.google_calls(google_id)
                return any(
                    c["path"].endswith("/addMessage") and text in c["body"]["message"]["body"]
                    for c in calls
                )

            await until(lambda: google_says("Congratulations, you are now Gold"), "Google: Gold")
            google_object = await stand_ins.google_object(google_id)
            assert google_object["classId"].endswith(".default-gold.storeCard")
            patches = [c for c in await stand_ins.google_calls(google_id) if c["method"] == "PATCH"]
            assert patches
            assert all(c["notified"] for c in patches)

            # Entering the Gold segment puts the presentation offer on the card.
            async def in_segment() -> bool:
                found = await segmentation_pb2_grpc.SegmentationServiceStub(
                    segments
                ).MembershipsFor(segmentation_pb2.MembershipsForRequest(customer_ids=[customer_id]))
                return segment_id in str(found)

            await until(in_segment, "the customer in the Gold segment")
            # The same push may carry it when the segment was as quick as the profile.
            offered = await after_push(
                before_gold,
                card.serial_number,
                card.authentication_token,
                lambda doc: (
                    "Private presentation" in str((pass_field(doc, "offers") or {}).get("value"))
                ),
                "the presentation offer on the card",
            )
            assert lock_screen_text(offered, "offers").startswith("Private presentation: 20% off")

            # (2) An online order: processed, then shipped with tomorrow's delivery window.
            before = len(await stand_ins.pushes(token))
            assert (await platform.send("/v1/track", order(user, 3, 80.0))).is_success
            processed = await after_push(
                before,
                card.serial_number,
                card.authentication_token,
                lambda doc: (pass_field(doc, "status") or {}).get("value") == "Order processed",
                "order processed on the card",
            )
            assert lock_screen_text(processed, "status") == "Order processed"
            tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
            window = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, tzinfo=UTC)
            shipped = {
                "type": "track",
                "userId": user,
                "event": "Order Shipped",
                "messageId": f"{user}-shipped",
                "properties": {
                    "order_id": f"{user}-o3",
                    "delivery_start": window.isoformat(),
                    "delivery_end": (window + timedelta(hours=2)).isoformat(),
                },
            }
            before = len(await stand_ins.pushes(token))
            assert (await platform.send("/v1/track", shipped)).is_success
            arriving = await after_push(
                before,
                card.serial_number,
                card.authentication_token,
                lambda doc: "arrives" in str((pass_field(doc, "status") or {}).get("value")),
                "the delivery push",
            )
            assert (
                lock_screen_text(arriving, "status")
                == "Your order arrives tomorrow between 10:00 and 12:00"
            )

            # (3) The offer pass becomes the presentation's ticket once the survey is answered.
            offer_pass = await wallet.IssuePass(
                wallet_pb2.IssuePassRequest(
                    customer_id=customer_id,
                    kind=wallet_pb2.PASS_KIND_COUPON,
                    offer_id=offer_id,
                )
            )
            assert (
                await phone.add(
                    DEV_PASS_TYPE_ID, offer_pass.serial_number, offer_pass.authentication_token
                )
                == 201
            )
            coupon = await phone.fetch(
                DEV_PASS_TYPE_ID, offer_pass.serial_number, offer_pass.authentication_token
            )
            assert "coupon" in coupon
            answer = {
                "type": "track",
                "userId": user,
                "event": "Survey Answered",
                "messageId": f"{user}-survey",
                "properties": {"offer_id": offer_id, "survey_id": "presentation", "answer": "yes"},
            }
            before = len(await stand_ins.pushes(token))
            assert (await platform.send("/v1/track", answer)).is_success
            ticket = await after_push(
                before,
                offer_pass.serial_number,
                offer_pass.authentication_token,
                lambda doc: (
                    "eventTicket" in doc
                    and "Reminder" in str((pass_field(doc, "status") or {}).get("value"))
                ),
                "the ticket and its reminder",
            )
            assert (pass_field(ticket, "event") or {})["value"] == "Private presentation"
            assert ticket["relevantDate"] == starts.isoformat()
            assert ticket["locations"] == [
                {
                    "latitude": 40.4168,
                    "longitude": -3.7038,
                    "relevantText": "Private presentation at Flagship store",
                }
            ]
            day = "today" if starts.date() == datetime.now(UTC).date() else "tomorrow"
            assert lock_screen_text(ticket, "status") == (
                f"Reminder: Private presentation is {day} at {starts:%H:%M}"
            )
        pushes = await stand_ins.pushes(token)
        assert all(p["topic"] == DEV_PASS_TYPE_ID and p["http_version"] == "2" for p in pushes)
        assert all(p["payload"] == {} for p in pushes)
    finally:
        await stand_ins.close()
        await channel.close()
        await segments.close()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, 30, what, 0.3)
