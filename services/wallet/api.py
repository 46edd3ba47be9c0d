"""The wallet gRPC servicer: proto <-> domain, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import wallet_pb2, wallet_pb2_grpc
from services.platform.errors import InvalidArgument
from services.wallet.passes import WalletPasses
from services.wallet.templates import PassKind

Context = grpc.aio.ServicerContext[Any, Any]
_KINDS = {
    wallet_pb2.PASS_KIND_STORE_CARD: PassKind.STORE_CARD,
    wallet_pb2.PASS_KIND_COUPON: PassKind.COUPON,
    wallet_pb2.PASS_KIND_EVENT_TICKET: PassKind.EVENT_TICKET,
    wallet_pb2.PASS_KIND_GENERIC: PassKind.GENERIC,
}
_PROTO_KINDS = {kind: proto for proto, kind in _KINDS.items()}


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    return stamp


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    """Issue, read and void passes over gRPC."""

    def __init__(self, passes: WalletPasses) -> None:
        self.passes = passes

    def _pass(self, doc: Mapping[str, Any]) -> wallet_pb2.WalletPass:
        return wallet_pb2.WalletPass(
            serial_number=doc["_id"],
            customer_id=doc["customer_id"],
            kind=_PROTO_KINDS[PassKind(doc["kind"])],
            platform=wallet_pb2.WALLET_PLATFORM_APPLE,
            pass_type_id=doc["pass_type_id"],
            authentication_token=doc["authentication_token"],
            web_service_url=self.passes.web_service_url,
            template=doc["template"],
            voided=bool(doc.get("voided", False)),
            created_at=_stamp(doc["created_at"]),
            updated_at=_stamp(doc["updated_at"]),
        )

    async def IssuePass(
        self, request: wallet_pb2.IssuePassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        """A new pass for the customer; Google Wallet is not supported yet."""
        if request.platform == wallet_pb2.WALLET_PLATFORM_GOOGLE:
            raise InvalidArgument("platform GOOGLE is not supported yet")
        if request.platform not in (
            wallet_pb2.WALLET_PLATFORM_UNSPECIFIED,
            wallet_pb2.WALLET_PLATFORM_APPLE,
        ):
            raise InvalidArgument(f"unknown platform {request.platform}")
        kind = _KINDS.get(request.kind)
        if kind is None:
            names = ", ".join(wallet_pb2.PassKind.Name(k) for k in _KINDS)
            raise InvalidArgument(f"kind must be one of {names}")
        doc = await self.passes.issue(request.customer_id, kind, request.template)
        return self._pass(doc)

    async def GetPass(
        self, request: wallet_pb2.GetPassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        """One pass by serial number."""
        return self._pass(await self.passes.get(request.serial_number))

    async def ListPasses(
        self, request: wallet_pb2.ListPassesRequest, context: Context
    ) -> wallet_pb2.ListPassesResponse:
        """Each requested customer's passes, in request order."""
        found = await self.passes.of_customers(list(request.customer_ids))
        return wallet_pb2.ListPassesResponse(
            customers=[
                wallet_pb2.CustomerPasses(
                    customer_id=customer_id, passes=[self._pass(d) for d in found[customer_id]]
                )
                for customer_id in request.customer_ids
            ]
        )

    async def VoidPass(
        self, request: wallet_pb2.VoidPassRequest, context: Context
    ) -> wallet_pb2.WalletPass:
        """Void a pass; registered phones fetch the voided pass."""
        return self._pass(await self.passes.void(request.serial_number))
