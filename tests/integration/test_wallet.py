"""The wallet against a real SecantusDB: a simulated phone on the PassKit web service over
real HTTP (register, serials since a tag, the pass with 304, 401, 400, log), and the gRPC API
over a real channel."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import grpc
import httpx
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import free_port
from lodestar.v1 import wallet_pb2, wallet_pb2_grpc
from services.platform.mongo import Document
from services.platform.rpc import GrpcServer
from services.wallet.api import WalletServicer
from services.wallet.applepass import PKPASS_MEDIA_TYPE, PassSigner
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.http import HttpServer
from services.wallet.live import LiveUpdates
from services.wallet.passes import WalletPasses
from services.wallet.server import SERVICE_NAME
from services.wallet.store import WalletStore
from services.wallet.webservice import PassKitWebService
from tests.support.kafka import unique
from tests.support.wallet import manifest_problems, pass_problems, verify_signature

PASS_TYPE_ID = "pass.com.example.lodestar.it"
DEVICE = "device0123456789abcdef"


@pytest.fixture(scope="module")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> SigningFiles:
    return ensure_dev_certificates(tmp_path_factory.mktemp("certs"), PASS_TYPE_ID, "TEAMIT0001")


class Clock:
    """A settable clock, so update times can be moved without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Wallet:
    passes: WalletPasses
    clock: Clock
    http: httpx.AsyncClient
    stub: wallet_pb2_grpc.WalletServiceAsyncStub


@pytest.fixture
async def wallet(
    client: AsyncIOMotorClient[Document], signing_files: SigningFiles
) -> AsyncIterator[Wallet]:
    store = WalletStore(client[unique("wallet")])
    await store.ensure_indexes()
    signer = PassSigner.from_files(
        signing_files.certificate, signing_files.key, signing_files.intermediate
    )
    clock = Clock()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    passes = WalletPasses(store, signer, url, clock)
    http_server = HttpServer(PassKitWebService(passes).app, "127.0.0.1", port)
    await http_server.start()
    grpc_server = GrpcServer(
        "127.0.0.1",
        0,
        [SERVICE_NAME],
        lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(
            WalletServicer(passes, LiveUpdates(passes, store)), s
        ),
    )
    await grpc_server.start()
    try:
        async with (
            httpx.AsyncClient(base_url=url) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel,
        ):
            yield Wallet(passes, clock, http, wallet_pb2_grpc.WalletServiceStub(channel))
    finally:
        await grpc_server.stop(0)
        await http_server.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"ApplePass {token}"}


async def issue(wallet: Wallet, customer: str = "c-1") -> wallet_pb2.WalletPass:
    return await wallet.stub.IssuePass(
        wallet_pb2.IssuePassRequest(customer_id=customer, kind=wallet_pb2.PASS_KIND_STORE_CARD)
    )


async def test_a_phone_registers_lists_and_fetches_the_pass(
    wallet: Wallet, signing_files: SigningFiles, tmp_path: Path
) -> None:
    issued = await issue(wallet)
    serial, token = issued.serial_number, issued.authentication_token
    assert issued.web_service_url == str(wallet.http.base_url).rstrip("/")
    registration = f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}/{serial}"

    first = await wallet.http.post(registration, json={"pushToken": "abc123"}, headers=auth(token))
    assert first.status_code == 201
    again = await wallet.http.post(registration, json={"pushToken": "def456"}, headers=auth(token))
    assert again.status_code == 200

    listing = await wallet.http.get(f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}")
    assert listing.status_code == 200
    body = listing.json()
    assert body["serialNumbers"] == [serial]
    assert isinstance(body["lastUpdated"], str)
    tag = body["lastUpdated"]
    nothing = await wallet.http.get(
        f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}", params={"passesUpdatedSince": tag}
    )
    assert nothing.status_code == 204

    fetched = await wallet.http.get(f"/v1/passes/{PASS_TYPE_ID}/{serial}", headers=auth(token))
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == PKPASS_MEDIA_TYPE
    with zipfile.ZipFile(io.BytesIO(fetched.content)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert manifest_problems(files) == []
    doc = json.loads(files["pass.json"])
    assert pass_problems(doc) == []
    assert doc["serialNumber"] == serial
    assert doc["authenticationToken"] == token
    verified = verify_signature(files, signing_files.intermediate, tmp_path)
    assert verified.returncode == 0, verified.stderr

    modified = fetched.headers["last-modified"]
    unchanged = await wallet.http.get(
        f"/v1/passes/{PASS_TYPE_ID}/{serial}",
        headers={**auth(token), "If-Modified-Since": modified},
    )
    assert unchanged.status_code == 304
    assert unchanged.content == b""

    # Voided within the same second: the update time still moves, so no wrong 304.
    await wallet.stub.VoidPass(wallet_pb2.VoidPassRequest(serial_number=serial))
    changed = await wallet.http.get(
        f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}", params={"passesUpdatedSince": tag}
    )
    assert changed.status_code == 200
    assert changed.json()["serialNumbers"] == [serial]
    assert int(changed.json()["lastUpdated"]) > int(tag)
    refetched = await wallet.http.get(
        f"/v1/passes/{PASS_TYPE_ID}/{serial}",
        headers={**auth(token), "If-Modified-Since": modified},
    )
    assert refetched.status_code == 200
    assert refetched.headers["last-modified"] != modified
    with zipfile.ZipFile(io.BytesIO(refetched.content)) as archive:
        assert json.loads(archive.read("pass.json"))["voided"] is True

    gone = await wallet.http.delete(registration, headers=auth(token))
    assert gone.status_code == 200
    empty = await wallet.http.get(f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}")
    assert empty.status_code == 204
    assert await wallet.passes.store.registrations_of(serial) == []


async def test_an_older_if_modified_since_gets_the_pass(wallet: Wallet) -> None:
    issued = await issue(wallet)
    earlier = format_datetime(wallet.clock.now - timedelta(hours=1), usegmt=True)
    response = await wallet.http.get(
        f"/v1/passes/{PASS_TYPE_ID}/{issued.serial_number}",
        headers={**auth(issued.authentication_token), "If-Modified-Since": earlier},
    )
    assert response.status_code == 200


async def test_wrong_or_missing_tokens_are_401(wallet: Wallet) -> None:
    issued = await issue(wallet)
    other = await issue(wallet, "c-2")
    path = f"/v1/passes/{PASS_TYPE_ID}/{issued.serial_number}"
    registration = f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}/{issued.serial_number}"
    for headers in (
        {},
        auth("wrong-token-" + "x" * 30),
        auth(other.authentication_token),
        {"Authorization": f"Bearer {issued.authentication_token}"},
    ):
        assert (await wallet.http.get(path, headers=headers)).status_code == 401
        posted = await wallet.http.post(registration, json={"pushToken": "a"}, headers=headers)
        assert posted.status_code == 401
        assert (await wallet.http.delete(registration, headers=headers)).status_code == 401
    unknown = f"/v1/passes/{PASS_TYPE_ID}/nosuchserial"
    assert (
        await wallet.http.get(unknown, headers=auth(issued.authentication_token))
    ).status_code == 401
    other_type = f"/v1/passes/pass.com.example.other/{issued.serial_number}"
    assert (
        await wallet.http.get(other_type, headers=auth(issued.authentication_token))
    ).status_code == 401
    android = {"Authorization": f"AndroidPass {issued.authentication_token}"}
    assert (await wallet.http.get(path, headers=android)).status_code == 200


async def test_bad_input_is_400_naming_the_problem(wallet: Wallet) -> None:
    issued = await issue(wallet)
    headers = auth(issued.authentication_token)
    registration = f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}/{issued.serial_number}"
    cases = [
        (await wallet.http.post(registration, content=b"not json", headers=headers), "JSON"),
        (await wallet.http.post(registration, json={}, headers=headers), "pushToken"),
        (
            await wallet.http.post(registration, json={"pushToken": "a b"}, headers=headers),
            "pushToken",
        ),
        (
            await wallet.http.post(
                f"/v1/devices/bad%20device/registrations/{PASS_TYPE_ID}/{issued.serial_number}",
                json={"pushToken": "a"},
                headers=headers,
            ),
            "deviceLibraryIdentifier",
        ),
        (
            await wallet.http.get(f"/v1/devices/{DEVICE}/registrations/notapasstype"),
            "passTypeIdentifier",
        ),
        (
            await wallet.http.get(
                f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}",
                params={"passesUpdatedSince": "yesterday"},
            ),
            "passesUpdatedSince",
        ),
        (await wallet.http.post("/v1/log", json={"logs": "one"}), "logs"),
    ]
    for response, named in cases:
        assert response.status_code == 400, response.text
        assert named in response.json()["error"]


async def test_log_and_health(wallet: Wallet) -> None:
    logged = await wallet.http.post("/v1/log", json={"logs": ["pass download failed"]})
    assert logged.status_code == 200
    health = await wallet.http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}


async def test_grpc_issue_get_list_void(wallet: Wallet) -> None:
    loyalty = await issue(wallet, "c-10")
    assert loyalty.pass_type_id == PASS_TYPE_ID
    assert len(loyalty.authentication_token) >= 32
    assert loyalty.platform == wallet_pb2.WALLET_PLATFORM_APPLE
    assert loyalty.template == "default"
    offer = await wallet.stub.PutOffer(
        wallet_pb2.Offer(offer_id="spring-20", segment_id="seg-vip", title="20% off in spring")
    )
    assert offer.title == "20% off in spring"
    coupon = await wallet.stub.IssuePass(
        wallet_pb2.IssuePassRequest(
            customer_id="c-10",
            kind=wallet_pb2.PASS_KIND_COUPON,
            platform=wallet_pb2.WALLET_PLATFORM_APPLE,
            template="default",
            offer_id="spring-20",
        )
    )
    assert coupon.offer_id == "spring-20"
    assert coupon.fields["offer"] == "20% off in spring"
    got = await wallet.stub.GetPass(wallet_pb2.GetPassRequest(serial_number=loyalty.serial_number))
    # The same pass, without the token only IssuePass hands out.
    assert got.authentication_token == ""
    got.authentication_token = loyalty.authentication_token
    assert got == loyalty

    listed = await wallet.stub.ListPasses(
        wallet_pb2.ListPassesRequest(customer_ids=["c-nobody", "c-10"])
    )
    assert [c.customer_id for c in listed.customers] == ["c-nobody", "c-10"]
    assert list(listed.customers[0].passes) == []
    assert {p.serial_number for p in listed.customers[1].passes} == {
        loyalty.serial_number,
        coupon.serial_number,
    }

    voided = await wallet.stub.VoidPass(
        wallet_pb2.VoidPassRequest(serial_number=coupon.serial_number)
    )
    assert voided.voided
    assert voided.updated_at.ToDatetime() > coupon.updated_at.ToDatetime()
    twice = await wallet.stub.VoidPass(
        wallet_pb2.VoidPassRequest(serial_number=coupon.serial_number)
    )
    assert twice == voided


async def test_only_issue_pass_hands_out_the_authentication_token(wallet: Wallet) -> None:
    issued = await issue(wallet, "c-secret")
    token = issued.authentication_token.encode()
    assert len(token) >= 32
    serial = issued.serial_number
    answers = [
        await wallet.stub.GetPass(wallet_pb2.GetPassRequest(serial_number=serial)),
        await wallet.stub.ListPasses(wallet_pb2.ListPassesRequest(customer_ids=["c-secret"])),
        await wallet.stub.UpdatePass(
            wallet_pb2.UpdatePassRequest(serial_number=serial, fields={"points": "5"})
        ),
        await wallet.stub.VoidPass(wallet_pb2.VoidPassRequest(serial_number=serial)),
    ]
    for answer in answers:
        assert token not in answer.SerializeToString(), type(answer).__name__
    listed = answers[1]
    assert isinstance(listed, wallet_pb2.ListPassesResponse)
    assert [p.serial_number for p in listed.customers[0].passes] == [serial]
    assert listed.customers[0].passes[0].authentication_token == ""
    # The token still works for the phone: the read API only stopped repeating it.
    fetched = await wallet.http.get(
        f"/v1/passes/{PASS_TYPE_ID}/{serial}", headers=auth(token.decode())
    )
    assert fetched.status_code == 200


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            wallet_pb2.IssuePassRequest(
                customer_id="c",
                kind=wallet_pb2.PASS_KIND_STORE_CARD,
                platform=wallet_pb2.WALLET_PLATFORM_GOOGLE,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "platform GOOGLE is not configured on this wallet service",
        ),
        (
            wallet_pb2.IssuePassRequest(customer_id="c", kind=wallet_pb2.PASS_KIND_COUPON),
            grpc.StatusCode.INVALID_ARGUMENT,
            "offer_id is required for COUPON passes",
        ),
        (
            wallet_pb2.IssuePassRequest(
                customer_id="c", kind=wallet_pb2.PASS_KIND_COUPON, offer_id="nope"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown offer_id 'nope'",
        ),
        (
            wallet_pb2.IssuePassRequest(
                customer_id="c", kind=wallet_pb2.PASS_KIND_STORE_CARD, offer_id="spring-20"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "offer_id is only for COUPON passes",
        ),
        (
            wallet_pb2.IssuePassRequest(customer_id="c"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "kind must be one of PASS_KIND_STORE_CARD",
        ),
        (
            wallet_pb2.IssuePassRequest(kind=wallet_pb2.PASS_KIND_COUPON),
            grpc.StatusCode.INVALID_ARGUMENT,
            "customer_id must be 1 to 128 characters",
        ),
        (
            wallet_pb2.IssuePassRequest(
                customer_id="c", kind=wallet_pb2.PASS_KIND_COUPON, template="gala"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown template 'gala'",
        ),
    ],
)
async def test_grpc_bad_issue_requests(
    wallet: Wallet, request_: wallet_pb2.IssuePassRequest, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await wallet.stub.IssuePass(request_)
    assert caught.value.code() == code
    assert message in str(caught.value.details())


async def test_grpc_unknown_and_bad_lookups(wallet: Wallet) -> None:
    for call in (
        wallet.stub.GetPass(wallet_pb2.GetPassRequest(serial_number="missing")),
        wallet.stub.GetPass(wallet_pb2.GetPassRequest()),
        wallet.stub.VoidPass(wallet_pb2.VoidPassRequest(serial_number="missing")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await wallet.stub.ListPasses(wallet_pb2.ListPassesRequest(customer_ids=["a", ""]))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty id" in str(bad.value.details())


async def test_grpc_update_message_save_link_and_offers(wallet: Wallet) -> None:
    card = await issue(wallet, "c-20")
    updated = await wallet.stub.UpdatePass(
        wallet_pb2.UpdatePassRequest(
            serial_number=card.serial_number,
            fields={"status": "Ready for pickup", "points": "40"},
            locations=[
                wallet_pb2.PassLocation(latitude=41.38, longitude=2.17, relevant_text="BCN")
            ],
        )
    )
    assert updated.fields["status"] == "Ready for pickup"
    assert updated.fields["points"] == "40"
    assert [loc.relevant_text for loc in updated.locations] == ["BCN"]
    assert updated.updated_at.ToDatetime() > card.updated_at.ToDatetime()

    for request_, message in (
        (
            wallet_pb2.UpdatePassRequest(serial_number=card.serial_number, fields={"tint": "x"}),
            "fields.tint is not a pass field",
        ),
        (
            wallet_pb2.UpdatePassRequest(
                serial_number=card.serial_number, fields={"cashback_minor": "1.5"}
            ),
            "fields.cashback_minor must be a whole number",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await wallet.stub.UpdatePass(request_)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(caught.value.details())

    sent = await wallet.stub.SendMessage(
        wallet_pb2.SendMessageRequest(
            customer_id="c-20",
            header="Store",
            body="Your order is ready",
            kind=wallet_pb2.MESSAGE_KIND_TRANSACTIONAL,
        )
    )
    assert (sent.passes, sent.held_back) == (1, "")
    held = await wallet.stub.SendMessage(
        wallet_pb2.SendMessageRequest(serial_number=card.serial_number, body="Spring sale")
    )
    assert (held.passes, held.held_back) == (0, "no wallet_marketing consent")
    with pytest.raises(grpc.aio.AioRpcError) as both:
        await wallet.stub.SendMessage(
            wallet_pb2.SendMessageRequest(serial_number="s", customer_id="c", body="b")
        )
    assert "exactly one of serial_number and customer_id" in str(both.value.details())

    with pytest.raises(grpc.aio.AioRpcError) as apple_link:
        await wallet.stub.GetSaveLink(
            wallet_pb2.GetSaveLinkRequest(serial_number=card.serial_number)
        )
    assert apple_link.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only Google passes have a save link" in str(apple_link.value.details())

    await wallet.stub.VoidPass(wallet_pb2.VoidPassRequest(serial_number=card.serial_number))
    with pytest.raises(grpc.aio.AioRpcError) as voided:
        await wallet.stub.UpdatePass(
            wallet_pb2.UpdatePassRequest(serial_number=card.serial_number, fields={"points": "1"})
        )
    assert voided.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await wallet.stub.PutOffer(wallet_pb2.Offer(offer_id="o-1", segment_id="s-1", title="Hi"))
    with pytest.raises(grpc.aio.AioRpcError) as bad_offer:
        await wallet.stub.PutOffer(wallet_pb2.Offer(offer_id="o 2", segment_id="s", title="t"))
    assert "offer_id must be" in str(bad_offer.value.details())
    listed = await wallet.stub.ListOffers(wallet_pb2.ListOffersRequest())
    assert [o.offer_id for o in listed.offers] == ["o-1"]
