"""Wallet mutations in process against a fake wallet stub: issuePass answers the save link
(Google) or a signed download URL (Apple) and never the pass's authentication token;
sendPassMessage, voidPass, putOffer map their RPCs; errors keep their codes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from lodestar.v1 import wallet_pb2
from tests.unit.gateway.mutation_support import graphql, only_error, rpc_error

TOKEN = "secret-token-of-the-pass-0123456789abcdefghij"
ISSUE = """
mutation($customerId: ID!, $platform: WalletPlatform!, $kind: WalletPassKind!,
         $offerId: String) {
  issuePass(customerId: $customerId, kind: $kind, platform: $platform, offerId: $offerId) {
    pass { serialNumber platform kind voided saveLink }
    saveLink downloadUrl downloadUrlExpiresAt
  }
}
"""
MESSAGE = """
mutation($serial: String, $customerId: ID, $kind: PassMessageKind!) {
  sendPassMessage(serialNumber: $serial, customerId: $customerId, header: "Hi",
                  body: "A message", kind: $kind) { passes heldBack }
}
"""
VOID = "mutation($serial: String!) { voidPass(serialNumber: $serial) { serialNumber voided } }"
LINK = "mutation($serial: String!) { passDownloadUrl(serialNumber: $serial) { url expiresAt } }"
OFFER = """
mutation($offer: OfferInput!) {
  putOffer(offer: $offer) { offerId segmentId title details surveyUrl
                            event { name venue latitude longitude startsAt } }
}
"""


class FakeWallet:
    """Answers like the wallet service (IssuePass with the token), recording requests."""

    def __init__(self, error: grpc.aio.AioRpcError | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, Any]] = []

    def _record(self, name: str, request: Any) -> None:
        self.calls.append((name, request))
        if self.error is not None:
            raise self.error

    async def IssuePass(  # noqa: N802 - fakes carry the RPC names
        self, request: wallet_pb2.IssuePassRequest
    ) -> wallet_pb2.WalletPass:
        self._record("IssuePass", request)
        google = request.platform == wallet_pb2.WALLET_PLATFORM_GOOGLE
        return wallet_pb2.WalletPass(
            serial_number="s-1",
            customer_id=request.customer_id,
            kind=request.kind,
            platform=request.platform,
            authentication_token=TOKEN,
            save_link="https://pay.example/save/eyJ" if google else "",
        )

    async def GetDownloadLink(  # noqa: N802
        self, request: wallet_pb2.GetDownloadLinkRequest
    ) -> wallet_pb2.DownloadLink:
        self._record("GetDownloadLink", request)
        link = wallet_pb2.DownloadLink(
            url=f"https://passes.example/downloads/{request.serial_number}?expires=1&sig=ab"
        )
        link.expires_at.FromSeconds(1_900_000_000)
        return link

    async def SendMessage(  # noqa: N802
        self, request: wallet_pb2.SendMessageRequest
    ) -> wallet_pb2.SendMessageResponse:
        self._record("SendMessage", request)
        return wallet_pb2.SendMessageResponse(passes=0, held_back="no wallet_marketing consent")

    async def VoidPass(  # noqa: N802
        self, request: wallet_pb2.VoidPassRequest
    ) -> wallet_pb2.WalletPass:
        self._record("VoidPass", request)
        return wallet_pb2.WalletPass(
            serial_number=request.serial_number, voided=True, authentication_token=TOKEN
        )

    async def PutOffer(self, request: wallet_pb2.Offer) -> wallet_pb2.Offer:  # noqa: N802
        self._record("PutOffer", request)
        return request


class Clients:
    def __init__(self, wallet: FakeWallet) -> None:
        self.wallet = wallet


async def test_an_apple_pass_comes_with_a_download_url_and_no_token() -> None:
    wallet = FakeWallet()
    variables = {"customerId": "c-1", "platform": "APPLE", "kind": "STORE_CARD"}
    body = await graphql(Clients(wallet), ISSUE, variables)
    assert "errors" not in body, body
    assert TOKEN not in str(body)
    issued = body["data"]["issuePass"]
    assert issued["pass"]["serialNumber"] == "s-1"
    assert issued["saveLink"] is None
    assert issued["downloadUrl"] == "https://passes.example/downloads/s-1?expires=1&sig=ab"
    assert issued["downloadUrlExpiresAt"].startswith("2030-03-17")
    assert [name for name, _ in wallet.calls] == ["IssuePass", "GetDownloadLink"]


async def test_a_google_pass_comes_with_its_save_link_and_no_download() -> None:
    wallet = FakeWallet()
    variables = {"customerId": "c-1", "platform": "GOOGLE", "kind": "STORE_CARD"}
    body = await graphql(Clients(wallet), ISSUE, variables)
    assert "errors" not in body, body
    issued = body["data"]["issuePass"]
    assert issued["saveLink"] == issued["pass"]["saveLink"] == "https://pay.example/save/eyJ"
    assert issued["downloadUrl"] is None
    assert [name for name, _ in wallet.calls] == ["IssuePass"]


async def test_no_field_of_the_schema_can_show_a_pass_token() -> None:
    from tests.unit.gateway.mutation_support import SCHEMA

    sdl = str(SCHEMA).lower()
    assert "authenticationtoken" not in sdl
    assert "authentication_token" not in sdl


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_INPUT"),
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
        (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
        (grpc.StatusCode.INTERNAL, "INTERNAL_SERVER_ERROR"),
    ],
)
async def test_wallet_errors_keep_their_codes(status: grpc.StatusCode, code: str) -> None:
    wallet = FakeWallet(rpc_error(status, "offer_id: unknown offer"))
    variables = {"customerId": "c-1", "platform": "APPLE", "kind": "COUPON", "offerId": "x"}
    error = only_error(await graphql(Clients(wallet), ISSUE, variables))
    # The read side renames SERVICE_UNAVAILABLE to UNAVAILABLE; both are that code.
    assert error["extensions"]["code"].replace("SERVICE_", "") == code


async def test_hostile_serials_are_coded_errors() -> None:
    for serial in ("s\ud800", "x" * 100_000):
        wallet = FakeWallet(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "serial_number: bad"))
        error = only_error(await graphql(Clients(wallet), VOID, {"serial": serial}))
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert serial not in error["message"]
    error = only_error(await graphql(Clients(FakeWallet()), VOID, {"serial": 12}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_send_pass_message_says_why_it_was_held_back() -> None:
    wallet = FakeWallet()
    body = await graphql(Clients(wallet), MESSAGE, {"customerId": "c-1", "kind": "MARKETING"})
    assert body["data"]["sendPassMessage"] == {
        "passes": 0,
        "heldBack": "no wallet_marketing consent",
    }
    [(_, request)] = wallet.calls
    assert request.customer_id == "c-1"
    assert request.kind == wallet_pb2.MESSAGE_KIND_MARKETING


async def test_send_pass_message_needs_exactly_one_target() -> None:
    wallet = FakeWallet()
    for variables in (
        {"kind": "MARKETING"},
        {"serial": "s", "customerId": "c", "kind": "MARKETING"},
    ):
        error = only_error(await graphql(Clients(wallet), MESSAGE, variables))
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert wallet.calls == []


async def test_void_pass_and_a_fresh_download_link() -> None:
    wallet = FakeWallet()
    body = await graphql(Clients(wallet), VOID, {"serial": "s-1"})
    assert body["data"]["voidPass"] == {"serialNumber": "s-1", "voided": True}
    body = await graphql(Clients(wallet), LINK, {"serial": "s-1"})
    assert body["data"]["passDownloadUrl"]["url"].startswith("https://passes.example/downloads/")
    assert TOKEN not in str(body)


async def test_put_offer_maps_every_field() -> None:
    wallet = FakeWallet()
    offer: dict[str, Any] = {
        "offerId": "spring",
        "segmentId": "gold",
        "title": "20% off",
        "details": "For answering our survey",
        "surveyUrl": "https://shop.example/survey",
        "event": {
            "name": "Preview",
            "venue": "Main Hall",
            "latitude": 40.4,
            "longitude": -3.7,
            "startsAt": "2030-06-01T19:00:00+00:00",
        },
    }
    body = await graphql(Clients(wallet), OFFER, {"offer": offer})
    assert "errors" not in body, body
    assert body["data"]["putOffer"] == offer
    bad = {**offer, "event": {**offer["event"], "startsAt": "not a time"}}
    error = only_error(await graphql(Clients(wallet), OFFER, {"offer": bad}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
