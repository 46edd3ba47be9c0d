"""GraphQL for wallet passes: the Apple and Google Wallet passes a customer holds and what
they show now. The per-pass authentication token stays in the wallet service: it is the
secret a phone proves itself with."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

import grpc
import strawberry
from strawberry.types import Info

from gateway.errors import from_rpc_error
from lodestar.v1 import wallet_pb2
from services.platform.timestamps import field_time


class WalletPassKind(Enum):
    STORE_CARD = wallet_pb2.PASS_KIND_STORE_CARD
    COUPON = wallet_pb2.PASS_KIND_COUPON
    EVENT_TICKET = wallet_pb2.PASS_KIND_EVENT_TICKET
    GENERIC = wallet_pb2.PASS_KIND_GENERIC


class WalletPlatform(Enum):
    APPLE = wallet_pb2.WALLET_PLATFORM_APPLE
    GOOGLE = wallet_pb2.WALLET_PLATFORM_GOOGLE


strawberry.enum(
    WalletPassKind,
    description="What a pass is: STORE_CARD (the loyalty card: points, cashback, tier), "
    "COUPON (an offer), EVENT_TICKET (an offer's event, once the customer answered its "
    "survey) or GENERIC.",
)
strawberry.enum(WalletPlatform, description="The wallet app that holds the pass.")


def _kind(kind: wallet_pb2.PassKind.ValueType) -> WalletPassKind:
    # The service never stores an unspecified kind; a kind newer than this gateway is shown
    # as GENERIC rather than failing the whole customer.
    try:
        return WalletPassKind(kind)
    except ValueError:
        return WalletPassKind.GENERIC


def _platform(platform: wallet_pb2.WalletPlatform.ValueType) -> WalletPlatform:
    # The wallet API treats an unspecified platform as Apple.
    if platform == wallet_pb2.WALLET_PLATFORM_GOOGLE:
        return WalletPlatform.GOOGLE
    return WalletPlatform.APPLE


@strawberry.type(description="One value a pass shows, e.g. points, tier, status or offers.")
class WalletPassField:
    key: str = strawberry.field(
        description="e.g. points, cashback_minor, tier, status, offers, event, venue, message"
    )
    value: str = strawberry.field(
        description="Always a string; numbers as digits (cashback_minor in minor units)."
    )


@strawberry.type(description="A place near which the phone shows the pass on the lock screen.")
class WalletPassLocation:
    latitude: float
    longitude: float
    relevant_text: str | None = strawberry.field(
        description="The lock-screen text near the place; null when the pass has none."
    )


@strawberry.type(description="A pass in the customer's Apple Wallet or Google Wallet.")
class WalletPass:
    serial_number: str = strawberry.field(
        description="The pass's id in the wallet service (GetPass, UpdatePass, VoidPass)."
    )
    kind: WalletPassKind
    platform: WalletPlatform
    template: str = strawberry.field(description="The design the pass was issued with.")
    voided: bool = strawberry.field(
        description="Voided passes show as void on the phone and can no longer be updated."
    )
    created_at: datetime | None
    updated_at: datetime | None = strawberry.field(
        description="When what the pass shows last changed."
    )
    save_link: str | None = strawberry.field(
        description='The "Save to Google Wallet" link; null for Apple passes (those are '
        "added by downloading the .pkpass)."
    )
    offer_id: str | None = strawberry.field(
        description="The offer a COUPON carries (or an EVENT_TICKET came from); null otherwise."
    )
    fields: list[WalletPassField] = strawberry.field(
        description="What the pass shows now, sorted by key."
    )
    relevant_dates: list[datetime] = strawberry.field(
        description="When the phone brings the pass to the lock screen (e.g. an event's start)."
    )
    locations: list[WalletPassLocation]

    @staticmethod
    def of(found: wallet_pb2.WalletPass) -> WalletPass:
        """The GraphQL face of a pass; its authentication token and web service stay out."""
        platform = _platform(found.platform)
        return WalletPass(
            serial_number=found.serial_number,
            kind=_kind(found.kind),
            platform=platform,
            template=found.template,
            voided=found.voided,
            created_at=field_time(found, "created_at"),
            updated_at=field_time(found, "updated_at"),
            save_link=(found.save_link or None) if platform is WalletPlatform.GOOGLE else None,
            offer_id=found.offer_id or None,
            fields=[WalletPassField(key=k, value=v) for k, v in sorted(found.fields.items())],
            relevant_dates=[at.ToDatetime(UTC) for at in found.relevant_dates],
            locations=[
                WalletPassLocation(
                    latitude=p.latitude,
                    longitude=p.longitude,
                    relevant_text=p.relevant_text or None,
                )
                for p in found.locations
            ],
        )


async def customer_wallet_passes(info: Info, customer_id: str) -> list[WalletPass]:
    """The customer's passes, oldest first, voided ones included (batched across the query)."""
    found = await info.context["loaders"].wallet_passes.load(customer_id)
    return [WalletPass.of(p) for p in found]


async def wallet_pass(info: Info, serial_number: str) -> WalletPass | None:
    """A pass by serial number; null when unknown (its authentication token never shown)."""
    try:
        found = await info.context["clients"].wallet.GetPass(
            wallet_pb2.GetPassRequest(serial_number=serial_number)
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise from_rpc_error(error) from error
    return WalletPass.of(found)
