"""Mutations on wallet passes and offers: issue a pass (with the link that adds it to the
phone), message, void, and define offers. Each needs ``wallet``.

The pass's authentication token (what a phone proves itself with) never leaves the wallet
service through GraphQL: not when the pass is issued, not later. An Apple pass is added by a
short-lived signed download URL, a Google pass by its "Save to Google Wallet" link.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

import strawberry
from google.protobuf.timestamp_pb2 import Timestamp
from strawberry.types import Info

from gateway.mutation_errors import call, input_error
from gateway.scopes import Scope, needs
from gateway.wallet import WalletPass, WalletPassKind, WalletPlatform
from lodestar.v1 import wallet_pb2
from services.platform.timestamps import field_time

_WALLET = [needs(Scope.WALLET)]


class PassMessageKind(Enum):
    TRANSACTIONAL = wallet_pb2.MESSAGE_KIND_TRANSACTIONAL
    MARKETING = wallet_pb2.MESSAGE_KIND_MARKETING


strawberry.enum(
    PassMessageKind,
    description="TRANSACTIONAL (about an order or ticket: always sent) or MARKETING (needs "
    "wallet_marketing consent, at most the daily cap).",
)


@strawberry.type(description="A signed link that downloads an Apple pass, for a few minutes.")
class PassDownload:
    url: str = strawberry.field(
        description="Opens the .pkpass in the customer's browser without any key; bound to "
        "this pass."
    )
    expires_at: datetime | None


@strawberry.type(description="A pass just issued and how the customer adds it to their phone.")
class IssuedPass:
    wallet_pass: WalletPass = strawberry.field(name="pass")
    save_link: str | None = strawberry.field(
        description='Google passes: the "Save to Google Wallet" link; null for Apple.'
    )
    download_url: str | None = strawberry.field(
        description="Apple passes: a signed link to the .pkpass, valid for a few minutes "
        "(passDownloadUrl makes a fresh one); null for Google."
    )
    download_url_expires_at: datetime | None


@strawberry.type(description="How many passes show a lock-screen message, or why not.")
class PassMessageResult:
    passes: int
    held_back: str | None = strawberry.field(
        description='Null when sent; otherwise why (e.g. "no wallet_marketing consent").'
    )


@strawberry.type(description="The event an offer leads to (its pass becomes the ticket).")
class OfferEvent:
    name: str
    venue: str
    latitude: float
    longitude: float
    starts_at: datetime | None


@strawberry.type(description="An offer shown to the customers of a segment.")
class Offer:
    offer_id: str
    segment_id: str
    title: str
    details: str
    survey_url: str
    event: OfferEvent | None

    @staticmethod
    def of(offer: wallet_pb2.Offer) -> Offer:
        event = offer.event if offer.HasField("event") else None
        return Offer(
            offer_id=offer.offer_id,
            segment_id=offer.segment_id,
            title=offer.title,
            details=offer.details,
            survey_url=offer.survey_url,
            event=None
            if event is None
            else OfferEvent(
                name=event.name,
                venue=event.venue,
                latitude=event.latitude,
                longitude=event.longitude,
                starts_at=field_time(event, "starts_at"),
            ),
        )


@strawberry.input(description="The event of an offer.")
class OfferEventInput:
    name: str
    latitude: float
    longitude: float
    starts_at: datetime
    venue: str = ""


@strawberry.input(description="An offer bound to a segment.")
class OfferInput:
    offer_id: str = strawberry.field(description="Letters, digits, '.', '_' or '-'.")
    segment_id: str
    title: str
    details: str = ""
    survey_url: str = ""
    event: OfferEventInput | None = None


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    try:
        stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        raise input_error(
            "offer.event.startsAt is out of range", "$.offer.event.startsAt"
        ) from None
    return stamp


def _offer(offer: OfferInput) -> wallet_pb2.Offer:
    message = wallet_pb2.Offer(
        offer_id=offer.offer_id,
        segment_id=offer.segment_id,
        title=offer.title,
        details=offer.details,
        survey_url=offer.survey_url,
    )
    if offer.event is not None:
        event = offer.event
        message.event.CopyFrom(
            wallet_pb2.OfferEvent(
                name=event.name,
                venue=event.venue,
                latitude=event.latitude,
                longitude=event.longitude,
                starts_at=_stamp(event.starts_at),
            )
        )
    return message


async def _download(info: Info, serial_number: str) -> PassDownload:
    link = await call(
        info.context["clients"].wallet.GetDownloadLink,
        lambda: wallet_pb2.GetDownloadLinkRequest(serial_number=serial_number),
    )
    return PassDownload(url=link.url, expires_at=field_time(link, "expires_at"))


@strawberry.type
class WalletMutation:
    @strawberry.field(
        description="Issue a pass to a customer; answers with the link that adds it to the "
        "phone (Google: saveLink; Apple: downloadUrl). COUPON passes need offerId. Needs wallet.",
        permission_classes=_WALLET,
    )
    async def issue_pass(
        self,
        info: Info,
        *,
        customer_id: strawberry.ID,
        kind: WalletPassKind,
        platform: WalletPlatform,
        template: str = "",
        offer_id: str | None = None,
    ) -> IssuedPass:
        issued = await call(
            info.context["clients"].wallet.IssuePass,
            lambda: wallet_pb2.IssuePassRequest(
                customer_id=str(customer_id),
                kind=kind.value,
                platform=platform.value,
                template=template,
                offer_id=offer_id or "",
            ),
        )
        # The token in ``issued`` goes no further than this function.
        shown = WalletPass.of(issued)
        download = None
        if shown.platform is WalletPlatform.APPLE:
            download = await _download(info, issued.serial_number)
        return IssuedPass(
            wallet_pass=shown,
            save_link=shown.save_link,
            download_url=download.url if download else None,
            download_url_expires_at=download.expires_at if download else None,
        )

    @strawberry.field(
        description="A fresh signed download link of an Apple pass. Needs wallet.",
        permission_classes=_WALLET,
    )
    async def pass_download_url(self, info: Info, serial_number: str) -> PassDownload:
        return await _download(info, serial_number)

    @strawberry.field(
        description="Show a lock-screen message on one pass (serialNumber) or on every live "
        "pass of a customer (customerId). Needs wallet.",
        permission_classes=_WALLET,
    )
    async def send_pass_message(
        self,
        info: Info,
        *,
        header: str,
        body: str,
        serial_number: str | None = None,
        customer_id: strawberry.ID | None = None,
        kind: PassMessageKind = PassMessageKind.MARKETING,
    ) -> PassMessageResult:
        if (serial_number is None) == (customer_id is None):
            raise input_error("pass exactly one of serialNumber or customerId", "$")
        sent = await call(
            info.context["clients"].wallet.SendMessage,
            lambda: wallet_pb2.SendMessageRequest(
                serial_number=serial_number or "",
                customer_id=str(customer_id or ""),
                header=header,
                body=body,
                kind=kind.value,
            ),
        )
        return PassMessageResult(passes=sent.passes, held_back=sent.held_back or None)

    @strawberry.field(
        description="Void a pass: phones show it as void; it can no longer change. Needs wallet.",
        permission_classes=_WALLET,
    )
    async def void_pass(self, info: Info, serial_number: str) -> WalletPass:
        voided = await call(
            info.context["clients"].wallet.VoidPass,
            lambda: wallet_pb2.VoidPassRequest(serial_number=serial_number),
        )
        return WalletPass.of(voided)

    @strawberry.field(
        description="Create or replace an offer: customers of its segment see it on their "
        "loyalty card. Needs wallet.",
        permission_classes=_WALLET,
    )
    async def put_offer(self, info: Info, offer: OfferInput) -> Offer:
        stored = await call(info.context["clients"].wallet.PutOffer, lambda: _offer(offer))
        return Offer.of(stored)
