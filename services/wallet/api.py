"""The wallet gRPC servicer: proto <-> domain, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import wallet_pb2, wallet_pb2_grpc
from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.validation import check_id
from services.wallet.downloads import DownloadLinks
from services.wallet.live import LiveUpdates
from services.wallet.offers import checked_offer
from services.wallet.passes import APPLE, GOOGLE, WalletPasses
from services.wallet.records import StoredOffer, StoredPass
from services.wallet.templates import PassKind

Context = grpc.aio.ServicerContext[Any, Any]
_KINDS = {
    wallet_pb2.PASS_KIND_STORE_CARD: PassKind.STORE_CARD,
    wallet_pb2.PASS_KIND_COUPON: PassKind.COUPON,
    wallet_pb2.PASS_KIND_EVENT_TICKET: PassKind.EVENT_TICKET,
    wallet_pb2.PASS_KIND_GENERIC: PassKind.GENERIC,
}
_PROTO_KINDS = {kind: proto for proto, kind in _KINDS.items()}
_PLATFORMS = {
    wallet_pb2.WALLET_PLATFORM_UNSPECIFIED: APPLE,
    wallet_pb2.WALLET_PLATFORM_APPLE: APPLE,
    wallet_pb2.WALLET_PLATFORM_GOOGLE: GOOGLE,
}
_PROTO_PLATFORMS = {
    APPLE: wallet_pb2.WALLET_PLATFORM_APPLE,
    GOOGLE: wallet_pb2.WALLET_PLATFORM_GOOGLE,
}
# Serial numbers are UUIDs, offer ids at most 64 characters, template names short words.
MAX_SERIAL_LENGTH = 64
MAX_NAME_LENGTH = 64


def _serial(serial_number: str) -> str:
    # Not required here: an empty serial is NOT_FOUND, as before.
    return check_id("serial_number", serial_number, required=False, limit=MAX_SERIAL_LENGTH)


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    return stamp


def _offer(doc: StoredOffer) -> wallet_pb2.Offer:
    offer = wallet_pb2.Offer(
        offer_id=doc["_id"],
        segment_id=doc["segment_id"],
        title=doc["title"],
        details=doc.get("details", ""),
        survey_url=doc.get("survey_url", ""),
    )
    event = doc.get("event")
    if event:
        offer.event.CopyFrom(
            wallet_pb2.OfferEvent(
                name=event["name"],
                venue=event.get("venue", ""),
                latitude=event["latitude"],
                longitude=event["longitude"],
                starts_at=_stamp(event["starts_at"]),
            )
        )
    return offer


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    """Issue, read, update, message and void passes; define offers."""

    def __init__(
        self, passes: WalletPasses, live: LiveUpdates, links: DownloadLinks | None = None
    ) -> None:
        self.passes = passes
        self.live = live
        self.links = links

    def _pass(self, doc: StoredPass) -> wallet_pb2.WalletPass:
        """The pass as every call but IssuePass answers it: without its secret token."""
        google = doc.get("google")
        return wallet_pb2.WalletPass(
            serial_number=doc["_id"],
            customer_id=doc["customer_id"],
            kind=_PROTO_KINDS[PassKind(doc["kind"])],
            platform=_PROTO_PLATFORMS[doc.get("platform", APPLE)],
            pass_type_id=doc["pass_type_id"],
            web_service_url=self.passes.web_service_url,
            template=doc["template"],
            voided=bool(doc.get("voided", False)),
            created_at=_stamp(doc["created_at"]),
            updated_at=_stamp(doc["updated_at"]),
            save_link=self.passes.save_link(doc) if google else "",
            google_object_id=google.get("object_id", "") if google else "",
            offer_id=doc.get("offer_id", ""),
            fields={k: str(v) for k, v in doc.get("fields", {}).items()},
            relevant_dates=[_stamp(at) for at in doc.get("relevant_dates", [])],
            locations=[
                wallet_pb2.PassLocation(
                    latitude=p["latitude"],
                    longitude=p["longitude"],
                    relevant_text=p.get("relevant_text", ""),
                )
                for p in doc.get("locations", [])
            ],
        )

    async def IssuePass(
        self, request: wallet_pb2.IssuePassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        """A new pass for the customer (Apple or Google), with its authentication token: the
        only answer that carries it."""
        platform = _PLATFORMS.get(request.platform)
        if platform is None:
            raise InvalidArgument(f"unknown platform {request.platform}")
        kind = _KINDS.get(request.kind)
        if kind is None:
            names = ", ".join(wallet_pb2.PassKind.Name(k) for k in _KINDS)
            raise InvalidArgument(f"kind must be one of {names}")
        check_id("template", request.template, required=False, limit=MAX_NAME_LENGTH)
        check_id("offer_id", request.offer_id, required=False, limit=MAX_NAME_LENGTH)
        doc = await self.passes.issue(
            request.customer_id, kind, request.template, platform, request.offer_id
        )
        issued = self._pass(doc)
        issued.authentication_token = doc["authentication_token"]
        return issued

    async def GetPass(
        self, request: wallet_pb2.GetPassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        """One pass by serial number."""
        return self._pass(await self.passes.get(_serial(request.serial_number)))

    async def ListPasses(
        self, request: wallet_pb2.ListPassesRequest, context: Context
    ) -> wallet_pb2.ListPassesResponse:
        """Each requested customer's passes, in request order."""
        for position, customer_id in enumerate(request.customer_ids):
            check_id(f"customer_ids[{position}]", customer_id, required=False)
        found = await self.passes.of_customers(list(request.customer_ids))
        return wallet_pb2.ListPassesResponse(
            customers=[
                wallet_pb2.CustomerPasses(
                    customer_id=customer_id, passes=[self._pass(d) for d in found[customer_id]]
                )
                for customer_id in request.customer_ids
            ]
        )

    async def UpdatePass(
        self, request: wallet_pb2.UpdatePassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        """Change what a pass shows; phones are pushed."""
        doc = await self.passes.update(
            _serial(request.serial_number),
            dict(request.fields),
            [at.ToDatetime(UTC) for at in request.relevant_dates],
            [
                {
                    "latitude": p.latitude,
                    "longitude": p.longitude,
                    "relevant_text": p.relevant_text,
                }
                for p in request.locations
            ],
        )
        return self._pass(doc)

    async def SendMessage(
        self, request: wallet_pb2.SendMessageRequest, context: Context
    ) -> wallet_pb2.SendMessageResponse:
        """A lock-screen message; marketing ones obey consent and the cap."""
        shown, why = await self.live.send_message(
            _serial(request.serial_number),
            check_id("customer_id", request.customer_id, required=False),
            request.header,
            request.body,
            marketing=request.kind != wallet_pb2.MESSAGE_KIND_TRANSACTIONAL,
        )
        return wallet_pb2.SendMessageResponse(passes=shown, held_back=why)

    async def VoidPass(
        self, request: wallet_pb2.VoidPassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        """Void a pass; registered phones fetch the voided pass."""
        return self._pass(await self.passes.void(_serial(request.serial_number)))

    async def GetSaveLink(
        self, request: wallet_pb2.GetSaveLinkRequest, context: Context
    ) -> wallet_pb2.SaveLink:
        """The "Save to Google Wallet" link of a Google pass."""
        doc = await self.passes.get(_serial(request.serial_number))
        return wallet_pb2.SaveLink(url=self.passes.save_link(doc))

    async def GetDownloadLink(
        self, request: wallet_pb2.GetDownloadLinkRequest, context: Context
    ) -> wallet_pb2.DownloadLink:
        """A short-lived signed link to an Apple pass's .pkpass."""
        doc = await self.passes.get(_serial(request.serial_number))
        if self.links is None:
            raise FailedPrecondition("download links are not enabled in this wallet service")
        if doc.get("platform", APPLE) != APPLE:
            raise FailedPrecondition("a Google pass is saved by its save link, not downloaded")
        if doc.get("voided"):
            raise FailedPrecondition("the pass is voided")
        url, expires_at = self.links.link(doc["_id"])
        return wallet_pb2.DownloadLink(url=url, expires_at=_stamp(expires_at))

    async def PutOffer(self, request: wallet_pb2.Offer, context: Context) -> wallet_pb2.Offer:
        """Create or replace a segment-bound offer."""
        event = None
        if request.HasField("event"):
            event = {
                "name": request.event.name,
                "venue": request.event.venue,
                "latitude": request.event.latitude,
                "longitude": request.event.longitude,
                "starts_at": (
                    request.event.starts_at.ToDatetime(UTC)
                    if request.event.HasField("starts_at")
                    else None
                ),
            }
        doc = checked_offer(
            request.offer_id,
            request.segment_id,
            request.title,
            details=request.details,
            survey_url=request.survey_url,
            event=event,
        )
        await self.passes.put_offer(doc)
        return _offer(doc)

    async def ListOffers(
        self, request: wallet_pb2.ListOffersRequest, context: Context
    ) -> wallet_pb2.ListOffersResponse:
        """Every offer."""
        return wallet_pb2.ListOffersResponse(offers=[_offer(d) for d in await self.passes.offers()])
