"""The Google Wallet client against the loopback stand-in over real HTTP: the token exchange
(and a refused key), classes inserted then patched, idempotent object inserts, patches that
notify, messages, retries after 429 and 5xx, a token refresh after a 401, a missing object;
the stand-in's own checks and test endpoints, its process mode, and the dev key it accepts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from infra.local.fake_google import (
    DEV_ISSUER_ID,
    NOTICE_FILE_NAME,
    STAND_IN_HEADER,
    FakeGoogleWallet,
    ensure_google_dev_service_account,
)
from infra.local.servers import free_port
from services.wallet.clients.google import (
    JWT_BEARER_GRANT,
    TOKEN_URI,
    GoogleWalletAuthError,
    GoogleWalletClient,
    GoogleWalletError,
    ServiceAccount,
    token_assertion,
)
from services.wallet.google import (
    NOTIFY_ON_UPDATE,
    TEXT_AND_NOTIFY,
    google_class,
    google_object,
    resource_for,
)
from services.wallet.passes import pass_content
from services.wallet.records import NewPass
from services.wallet.templates import DEFAULT_TEMPLATE, PassKind

ROOT = Path(__file__).resolve().parents[2]
LOGO = "https://cdn.example.com/lodestar-logo.png"
CLASS_ID = f"{DEV_ISSUER_ID}.default.storeCard"
OBJECT_ID = f"{DEV_ISSUER_ID}.serial-1"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev service-account key the stand-in accepts."""
    return ensure_google_dev_service_account(tmp_path_factory.mktemp("google"), TOKEN_URI)


@pytest.fixture(scope="module")
def account(key_file: Path) -> ServiceAccount:
    """The dev service account."""
    return ServiceAccount.from_file(key_file)


@pytest.fixture
async def fake(account: ServiceAccount, tmp_path: Path) -> AsyncIterator[FakeGoogleWallet]:
    """A stand-in on a free port, logging its calls to a file."""
    server = FakeGoogleWallet(account, log_path=tmp_path / "google-calls.jsonl")
    await server.start()
    yield server
    await server.stop()


def client_of(
    fake: FakeGoogleWallet, account: ServiceAccount, **options: Any
) -> GoogleWalletClient:
    options.setdefault("backoff_s", 0.01)
    return GoogleWalletClient(fake.api_base_url, fake.token_uri, fake.issuer_id, account, **options)


@pytest.fixture
async def client(
    fake: FakeGoogleWallet, account: ServiceAccount
) -> AsyncIterator[GoogleWalletClient]:
    """The production client pointed at the stand-in."""
    async with client_of(fake, account) as made:
        yield made


def store_card(**fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The class and object bodies of a Gold store card."""
    doc = {
        "_id": "serial-1",
        "kind": PassKind.STORE_CARD.value,
        "template": "default",
        "authentication_token": "t" * 43,
        "fields": {"tier": "Gold", "points": 120, "cashback_minor": 1250, **fields},
    }
    content = pass_content(cast(NewPass, doc), "https://wallet.example.com/passkit")
    klass = google_class(content, DEFAULT_TEMPLATE, DEV_ISSUER_ID, logo_uri=LOGO)
    return klass, google_object(content, DEV_ISSUER_ID, klass["id"])


def routes(fake: FakeGoogleWallet) -> list[tuple[str, str, int]]:
    return [(c["method"], c["path"], c["status"]) for c in fake.calls]


API = "/walletobjects/v1"


async def test_token_exchange_happens_once_and_is_reused(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, body = store_card()
    await client.ensure_class("loyalty", klass)
    await client.insert_object("loyalty", body)
    token_calls = [c for c in fake.calls if c["path"] == "/token"]
    assert len(token_calls) == 1
    assert token_calls[0]["status"] == 200
    assert token_calls[0]["body"]["grant_type"] == JWT_BEARER_GRANT
    assert routes(fake)[1:] == [
        ("POST", f"{API}/loyaltyClass", 200),
        ("POST", f"{API}/loyaltyObject", 200),
    ]


async def test_a_key_google_does_not_know_is_refused_clearly(
    fake: FakeGoogleWallet, account: ServiceAccount, tmp_path: Path
) -> None:
    other = ServiceAccount.from_file(ensure_google_dev_service_account(tmp_path, TOKEN_URI))
    # Same account and key id, different key: only the signature gives it away.
    impostor = ServiceAccount(account.client_email, account.private_key_id, other.private_key)
    async with client_of(fake, impostor) as client:
        with pytest.raises(GoogleWalletAuthError) as refused:
            await client.get_object("loyalty", OBJECT_ID)
    assert refused.value.status == 400
    assert "invalid_grant" in refused.value.message
    assert "Invalid JWT Signature" in refused.value.message
    assert account.client_email in refused.value.message
    assert not refused.value.retryable
    assert routes(fake) == [("POST", "/token", 400)]  # refused once, not retried


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": JWT_BEARER_GRANT, "assertion": "not-a-jwt"}, "invalid_grant"),
    ],
)
async def test_token_endpoint_speaks_oauth(
    fake: FakeGoogleWallet, form: dict[str, str], error: str
) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(fake.token_uri, data=form)
    assert answer.status_code == 400
    assert answer.json()["error"] == error


@pytest.mark.parametrize(
    ("audience", "issued_ago_s", "problem"),
    [
        (TOKEN_URI, 0, "audience"),  # meant for Google, sent to the stand-in
        (None, 7200, "expired"),
    ],
)
async def test_token_endpoint_checks_the_assertion(
    fake: FakeGoogleWallet,
    account: ServiceAccount,
    audience: str | None,
    issued_ago_s: int,
    problem: str,
) -> None:
    assertion = token_assertion(account, audience or fake.token_uri, time.time() - issued_ago_s)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            fake.token_uri, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert problem in answer.json()["error_description"].lower()


async def test_ensure_class_inserts_then_patches_changes(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, _ = store_card()
    first = await client.ensure_class("loyalty", klass)
    assert first["programName"] == "Lodestar"
    renamed = {**klass, "programName": "Lodestar Club"}
    second = await client.ensure_class("loyalty", renamed)
    assert second["programName"] == "Lodestar Club"
    assert fake.classes[CLASS_ID]["programName"] == "Lodestar Club"
    assert routes(fake)[1:] == [
        ("POST", f"{API}/loyaltyClass", 200),
        ("POST", f"{API}/loyaltyClass", 409),
        ("PATCH", f"{API}/loyaltyClass/{CLASS_ID}", 200),
    ]


async def test_inserting_an_object_twice_is_idempotent(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, body = store_card()
    await client.ensure_class("loyalty", klass)
    first = await client.insert_object("loyalty", body)
    again = await client.insert_object("loyalty", body)
    assert again == first
    assert again["loyaltyPoints"]["balance"] == {"int": 120}
    assert list(fake.objects) == [OBJECT_ID]
    assert routes(fake)[-3:] == [
        ("POST", f"{API}/loyaltyObject", 200),
        ("POST", f"{API}/loyaltyObject", 409),
        ("GET", f"{API}/loyaltyObject/{OBJECT_ID}", 200),
    ]


async def test_patch_notifies_the_holder(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, body = store_card()
    await client.ensure_class("loyalty", klass)
    await client.insert_object("loyalty", body)
    _, richer = store_card(points=450)
    patched = await client.patch_object(
        "loyalty", OBJECT_ID, {"loyaltyPoints": richer["loyaltyPoints"]}
    )
    assert patched["loyaltyPoints"]["balance"] == {"int": 450}
    call = fake.calls[-1]
    assert (call["method"], call["path"]) == ("PATCH", f"{API}/loyaltyObject/{OBJECT_ID}")
    assert call["body"]["notifyPreference"] == NOTIFY_ON_UPDATE
    assert call["notified"] is True
    # Ephemeral: Google does not keep it on the object.
    assert "notifyPreference" not in fake.objects[OBJECT_ID]
    # The rest of the object is untouched by a patch.
    assert fake.objects[OBJECT_ID]["secondaryLoyaltyPoints"] == body["secondaryLoyaltyPoints"]

    await client.patch_object("loyalty", OBJECT_ID, {"state": "INACTIVE"}, notify=False)
    quiet = fake.calls[-1]
    assert "notifyPreference" not in quiet["body"]
    assert quiet["notified"] is False
    assert fake.objects[OBJECT_ID]["state"] == "INACTIVE"


async def test_add_message_pushes_text_and_notify(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, body = store_card()
    await client.ensure_class("loyalty", klass)
    await client.insert_object("loyalty", body)
    updated = await client.add_message(
        "loyalty", OBJECT_ID, "You are Gold now", "Enjoy free delivery", "tier-gold-1"
    )
    assert updated["messages"][-1]["id"] == "tier-gold-1"
    call = fake.calls[-1]
    assert call["path"] == f"{API}/loyaltyObject/{OBJECT_ID}/addMessage"
    assert call["body"]["message"]["messageType"] == TEXT_AND_NOTIFY
    assert call["notified"] is True
    assert fake.objects[OBJECT_ID]["messages"] == [call["body"]["message"]]


async def test_every_kind_goes_through(fake: FakeGoogleWallet, client: GoogleWalletClient) -> None:
    for kind in (PassKind.COUPON, PassKind.EVENT_TICKET):
        doc = {
            "_id": f"serial-{kind.value}",
            "kind": kind.value,
            "template": "default",
            "authentication_token": "t" * 43,
            "fields": {"tier": "Silver"},
        }
        content = pass_content(cast(NewPass, doc), "https://wallet.example.com/passkit")
        resource = resource_for(kind)
        klass = await client.ensure_class(
            resource, google_class(content, DEFAULT_TEMPLATE, DEV_ISSUER_ID)
        )
        stored = await client.insert_object(
            resource, google_object(content, DEV_ISSUER_ID, klass["id"])
        )
        assert stored["kind"] == f"walletobjects#{resource}Object"
    assert {c["status"] for c in fake.calls} == {200}


async def test_429_is_retried(fake: FakeGoogleWallet, client: GoogleWalletClient) -> None:
    klass, body = store_card()
    await client.ensure_class("loyalty", klass)
    await client.insert_object("loyalty", body)
    fake.script_failure(429, count=1, path_contains="/loyaltyObject/")
    found = await client.get_object("loyalty", OBJECT_ID)
    assert found["id"] == OBJECT_ID
    assert routes(fake)[-2:] == [
        ("GET", f"{API}/loyaltyObject/{OBJECT_ID}", 429),
        ("GET", f"{API}/loyaltyObject/{OBJECT_ID}", 200),
    ]


async def test_5xx_gives_up_after_max_attempts(
    fake: FakeGoogleWallet, account: ServiceAccount
) -> None:
    async with client_of(fake, account, max_attempts=3) as client:
        fake.script_failure(503, count=5, path_contains="/loyaltyObject")
        with pytest.raises(GoogleWalletError) as failed:
            await client.get_object("loyalty", OBJECT_ID)
    assert failed.value.status == 503
    assert failed.value.retryable
    assert "after 3 attempts" in failed.value.message
    assert [c["status"] for c in fake.calls if "loyaltyObject" in c["path"]] == [503, 503, 503]


async def test_expired_token_is_refreshed_once(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, _ = store_card()
    await client.ensure_class("loyalty", klass)
    fake.expire_tokens()
    await client.ensure_class("loyalty", klass)
    assert routes(fake) == [
        ("POST", "/token", 200),
        ("POST", f"{API}/loyaltyClass", 200),
        ("POST", f"{API}/loyaltyClass", 401),
        ("POST", "/token", 200),
        ("POST", f"{API}/loyaltyClass", 409),
        ("PATCH", f"{API}/loyaltyClass/{CLASS_ID}", 200),
    ]


async def test_unknown_object_is_a_404_naming_it(client: GoogleWalletClient) -> None:
    missing = f"{DEV_ISSUER_ID}.no-such-pass"
    with pytest.raises(GoogleWalletError) as failed:
        await client.get_object("loyalty", missing)
    assert failed.value.status == 404
    assert missing in failed.value.message
    assert "get loyaltyObject" in failed.value.message
    assert "NOT_FOUND" in failed.value.message
    assert not failed.value.retryable


async def test_the_stand_in_validates_like_google(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, body = store_card()
    with pytest.raises(GoogleWalletError, match="issuerName is required") as failed:
        await client.ensure_class("loyalty", {k: v for k, v in klass.items() if k != "issuerName"})
    assert failed.value.status == 400
    with pytest.raises(GoogleWalletError, match=f"must be {DEV_ISSUER_ID}") as failed:
        await client.ensure_class("loyalty", {**klass, "id": "1234.default.storeCard"})
    assert failed.value.status == 400
    with pytest.raises(GoogleWalletError, match="not an existing loyaltyClass") as failed:
        await client.insert_object("loyalty", body)
    assert failed.value.status == 400
    await client.ensure_class("loyalty", klass)
    stateless = {k: v for k, v in body.items() if k != "state"}
    with pytest.raises(GoogleWalletError, match="state is required"):
        await client.insert_object("loyalty", stateless)
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(f"{fake.api_base_url}/loyaltyObject/{OBJECT_ID}")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
    assert anonymous.headers[STAND_IN_HEADER] == "google-wallet"


async def test_test_endpoints_and_call_log(
    fake: FakeGoogleWallet, client: GoogleWalletClient
) -> None:
    klass, body = store_card()
    await client.ensure_class("loyalty", klass)
    await client.insert_object("loyalty", body)
    async with httpx.AsyncClient(base_url=fake.url) as http:
        listing = (await http.get("/fake/calls", params={"since": 1})).json()
        assert "NOT Google" in listing["stand_in"]
        assert listing["count"] == 3
        assert [c["index"] for c in listing["calls"]] == [1, 2]
        stored = (await http.get(f"/fake/objects/{OBJECT_ID}")).json()
        assert stored["classId"] == CLASS_ID
        assert (await http.get(f"/fake/objects/{DEV_ISSUER_ID}.none")).status_code == 404
        scripted = await http.post("/fake/responses", json={"status": 500, "count": 1})
        assert scripted.status_code == 200
        refused = await http.post("/fake/responses", json={"status": 404, "count": 1})
        assert refused.status_code == 400
        await client.get_object("loyalty", OBJECT_ID)  # one 500, retried
        assert [c["status"] for c in fake.calls[-2:]] == [500, 200]
        assert (await http.delete("/fake/calls")).json()["cleared"] == 5
        assert fake.calls == []
        await client.get_object("loyalty", OBJECT_ID)
        after = (await http.get("/fake/calls", params={"since": 5})).json()
        assert [c["index"] for c in after["calls"]] == [5]  # indexes go on after a clear
    assert fake.log_path is not None
    logged = [json.loads(line) for line in fake.log_path.read_text().splitlines()]
    assert [entry["status"] for entry in logged] == [200, 200, 200, 500, 200, 200]
    assert logged[1]["body"]["id"] == CLASS_ID


# --- as a process ---


@pytest.fixture
def fake_process(key_file: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m infra.local.fake_google`` on a free port."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.local.fake_google",
            "--port",
            str(port),
            "--service-account-key",
            str(key_file),
            "--log",
            str(tmp_path / "calls.jsonl"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait(5)


async def test_process_mode_serves_and_stops_on_sigterm(
    fake_process: tuple[subprocess.Popen[bytes], int], account: ServiceAccount, tmp_path: Path
) -> None:
    process, port = fake_process
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            try:
                health = await http.get("/fake/health")
                break
            except httpx.TransportError:
                assert process.poll() is None, "the stand-in exited while starting"
                assert time.monotonic() < deadline, "the stand-in did not start in 10 s"
                await asyncio.sleep(0.05)
        assert "NOT Google" in health.json()["stand_in"]
        klass, _ = store_card()
        async with GoogleWalletClient(
            f"{url}/walletobjects/v1", f"{url}/token", DEV_ISSUER_ID, account
        ) as client:
            await client.ensure_class("loyalty", klass)
        calls = (await http.get("/fake/calls")).json()["calls"]
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("POST", "/token", 200),
        ("POST", f"{API}/loyaltyClass", 200),
    ]
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert process.stdout is not None
    output = process.stdout.read().decode()
    assert "NOT Google" in output
    assert len((tmp_path / "calls.jsonl").read_text().splitlines()) == 2


# --- dev credentials ---


def test_dev_key_is_made_once_and_follows_the_token_uri(tmp_path: Path) -> None:
    path = ensure_google_dev_service_account(tmp_path, "http://127.0.0.1:1111/token")
    first = json.loads(path.read_text())
    assert first["type"] == "service_account"
    assert first["client_email"].endswith(".iam.gserviceaccount.com")
    assert first["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert first["token_uri"] == "http://127.0.0.1:1111/token"
    assert path.stat().st_mode & 0o077 == 0
    notice = (tmp_path / NOTICE_FILE_NAME).read_text()
    assert "NOT a Google credential" in notice
    assert DEV_ISSUER_ID in notice

    assert ensure_google_dev_service_account(tmp_path, "http://127.0.0.1:1111/token") == path
    assert json.loads(path.read_text()) == first

    ensure_google_dev_service_account(tmp_path, "http://127.0.0.1:2222/token")
    moved = json.loads(path.read_text())
    assert moved["token_uri"] == "http://127.0.0.1:2222/token"
    assert moved["private_key"] == first["private_key"]
    assert moved["private_key_id"] == first["private_key_id"]
    assert path.stat().st_mode & 0o077 == 0

    path.write_text("{broken")
    ensure_google_dev_service_account(tmp_path, "http://127.0.0.1:2222/token")
    assert ServiceAccount.from_file(path).private_key != first["private_key"]
