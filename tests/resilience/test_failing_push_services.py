"""APNs answering 429 and 503, the Google Wallet API answering 500, under the wallet's push
dispatcher while loyalty changes keep coming: the clients retry with backoff, the
dispatcher's queue stays bounded (one entry per pass), the wallet's health says APNs or
Google is down (degraded, still ready), and once the fault clears every pass gets its update
once, with its latest content.

Real servers as the wallet uses them: SecantusDB, the loopback APNs stand-in over TLS +
HTTP/2, the Google Wallet stand-in, the PassKit web service for the phones. The dispatcher's
lease and grace are shortened so retries come within seconds instead of half a minute.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.devapns import ApnsDevFiles, ensure_apns_dev_files
from infra.local.fake_apns import FakeApns
from infra.local.fake_google import (
    DEV_ISSUER_ID,
    FakeGoogleWallet,
    ensure_google_dev_service_account,
)
from infra.local.servers import free_port
from lodestar.v1 import common_pb2, events_pb2, profile_pb2
from services.platform.health import DependencyHealth
from services.platform.mongo import Document
from services.wallet import delivery
from services.wallet.applepass import PassSigner
from services.wallet.clients.apns import ApnsClient, ApnsCredentials
from services.wallet.clients.google import GoogleWalletClient, ServiceAccount
from services.wallet.delivery import Dispatcher
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.googlepasses import GooglePasses
from services.wallet.http import HttpServer
from services.wallet.live import LivePolicy, LiveUpdates
from services.wallet.passes import GOOGLE, WalletPasses
from services.wallet.store import WalletStore
from services.wallet.templates import PassKind
from services.wallet.webservice import PassKitWebService
from tests.support.kafka import eventually, unique
from tests.support.wallet import pass_field, unzip

PASS_TYPE_ID = "pass.com.example.resil"
TEAM_ID = "TEAMRESIL1"
KEY_ID = "RESILKEY01"
CARDS = 8
CHANGES = 4
# The APNs client's tries per push (its default).
ATTEMPTS = 4


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
class Wallet:
    passes: WalletPasses
    live: LiveUpdates
    apns: FakeApns
    google: FakeGoogleWallet
    phone: httpx.AsyncClient
    dispatcher: Dispatcher
    health: DependencyHealth
    queue_sizes: list[int] = field(default_factory=list)

    async def register(self, doc: Mapping[str, Any], token: str) -> None:
        response = await self.phone.post(
            f"/v1/devices/{token[:16]}/registrations/{PASS_TYPE_ID}/{doc['_id']}",
            json={"pushToken": token},
            headers={"Authorization": f"ApplePass {doc['authentication_token']}"},
        )
        assert response.status_code == 201, response.text

    async def points_on_phone(self, doc: Mapping[str, Any]) -> Any:
        response = await self.phone.get(
            f"/v1/passes/{PASS_TYPE_ID}/{doc['_id']}",
            headers={"Authorization": f"ApplePass {doc['authentication_token']}"},
        )
        assert response.status_code == 200
        found = pass_field(
            dict(__import__("json").loads(unzip(response.content)["pass.json"])), "points"
        )
        assert found is not None
        return found["value"]

    async def all_pushed(self, docs: Sequence[Mapping[str, Any]]) -> bool:
        for doc in docs:
            stored = await self.passes.get(doc["_id"])
            if "push_due" in stored:
                return False
        return True


@pytest.fixture
async def wallet(
    client: AsyncIOMotorClient[Document],
    signing_files: SigningFiles,
    apns_files: ApnsDevFiles,
    google_key: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Wallet]:
    # Retries of failed pushes after about a second instead of half a minute.
    monkeypatch.setattr(delivery, "LEASE", timedelta(seconds=1))
    monkeypatch.setattr(delivery, "GRACE", timedelta(milliseconds=500))
    monkeypatch.setattr(delivery, "POLL_S", 0.2)
    store = WalletStore(client[unique("wallet_resilience")])
    await store.ensure_indexes()
    signer = PassSigner.from_files(
        signing_files.certificate, signing_files.key, signing_files.intermediate
    )
    health = DependencyHealth({}, [], optional=["apns", "google"])
    fake_apns = FakeApns.from_dev_files(apns_files, topics=[PASS_TYPE_ID])
    fake_google = FakeGoogleWallet(google_key)
    await fake_apns.start()
    await fake_google.start()
    apns = ApnsClient(
        fake_apns.url,
        ApnsCredentials.from_file(apns_files.auth_key, TEAM_ID, KEY_ID),
        ca_file=apns_files.ca_certificate,
        backoff_s=0.01,
        on_outcome=health.reporter("apns"),
    )
    google_api = GoogleWalletClient(
        fake_google.api_base_url,
        fake_google.token_uri,
        DEV_ISSUER_ID,
        ServiceAccount.from_file(google_key),
        backoff_s=0.01,
        on_outcome=health.reporter("google"),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    google = GooglePasses(google_api, DEV_ISSUER_ID, url)
    passes = WalletPasses(store, signer, url, push_delay_s=0.1, google=google)
    dispatcher = Dispatcher(store, apns, google)
    passes.on_push_scheduled(dispatcher.schedule)
    updates = LiveUpdates(passes, store, LivePolicy(marketing_per_day=1), flush=dispatcher.flush)
    http = HttpServer(PassKitWebService(passes, health=health).app, "127.0.0.1", port)
    await http.start()
    running = asyncio.create_task(dispatcher.run())
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as phone:
            yield Wallet(passes, updates, fake_apns, fake_google, phone, dispatcher, health)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await http.stop()
        await apns.aclose()
        await google_api.aclose()
        await fake_google.stop()
        await fake_apns.stop()


def changed(customer: str, points: int) -> events_pb2.ProfileChanged:
    return events_pb2.ProfileChanged(
        event_id=unique("pc"),
        customer_id=customer,
        changed_paths=["loyalty"],
        loyalty=profile_pb2.Loyalty(
            points=points,
            tier="Bronze",
            cashback_balance=common_pb2.Money(currency="EUR", amount_minor=0),
        ),
    )


async def change_all(wallet: Wallet, customers: list[str], points: int) -> None:
    await wallet.live.profile_changes([changed(c, points) for c in customers])
    wallet.queue_sizes.append(wallet.dispatcher.queued)


async def until(check: Any, what: str, timeout_s: float = 30) -> None:
    async def ready() -> bool:
        result = check()
        return bool(await result) if asyncio.iscoroutine(result) else bool(result)

    await eventually(ready, timeout_s, what, interval_s=0.1)


async def test_apns_429_then_503_drops_nothing_and_pushes_each_pass_once(
    wallet: Wallet,
) -> None:
    await apns_outage(wallet, CARDS)


@pytest.mark.resilience_slow
async def test_apns_outage_over_many_passes_keeps_the_queue_at_its_cap(wallet: Wallet) -> None:
    # More passes than the queue may hold: the rest wait in the store for the poll.
    wallet.dispatcher.max_queued = 50
    await apns_outage(wallet, 300)


async def apns_outage(wallet: Wallet, count: int) -> None:
    """``count`` registered passes change while APNs refuses every push (429, then 503);
    once it answers again each phone is told once and fetches the latest pass."""
    customers = [unique("c") for _ in range(count)]
    tokens = {c: f"{i:04x}" * 16 for i, c in enumerate(customers, start=1)}
    cards = [await wallet.passes.issue(c, PassKind.STORE_CARD, "default") for c in customers]
    for customer, card in zip(customers, cards, strict=True):
        await wallet.register(card, tokens[customer])
    cap = min(count, wallet.dispatcher.max_queued)

    # APNs says TooManyRequests, then ServiceUnavailable, to every push until cleared; the
    # changes all come while it refuses (a push begun before a change and delivered after
    # it is rightly followed by another, so none is left in flight across the recovery).
    wallet.apns.stand_in.script(429, count=1_000_000)
    for n in range(1, CHANGES + 1):
        await change_all(wallet, customers, 100 * n)
    await until(lambda: not wallet.health.up["apns"], "APNs reported down")
    wallet.apns.stand_in.clear_scripted()
    wallet.apns.stand_in.script(503, count=1_000_000)
    await until(
        lambda: sum(p.status == 503 for p in wallet.apns.received) >= 2 * count * ATTEMPTS,
        "every pass refused with 503 at least twice",
        timeout_s=120,
    )
    refused = [p.status for p in wallet.apns.received]
    # Each pass was tried again and again, each round with ATTEMPTS tries (backing off).
    assert refused.count(429) >= count
    assert not any(status == 200 for status in refused)
    assert wallet.health.detail()["status"] == "degraded"
    assert wallet.health.ready  # APNs down delays pushes; the wallet still serves
    # One queue entry per pass at most, however many changes came, and never past the cap.
    assert max(wallet.queue_sizes) <= cap
    assert wallet.dispatcher.queued <= cap

    cleared_at = len(wallet.apns.received)
    wallet.apns.stand_in.clear_scripted()
    await until(lambda: wallet.all_pushed(cards), "every pass pushed after APNs recovered", 120)
    await until(lambda: wallet.health.up["apns"], "APNs reported up again")
    delivered = [p.device_token for p in wallet.apns.received[cleared_at:] if p.status == 200]
    twice = sorted({t[:8] for t in delivered if delivered.count(t) > 1})
    missed = sorted(t[:8] for t in set(tokens.values()) - set(delivered))
    assert (twice, missed) == ([], []), "each phone told exactly once"
    assert len(delivered) == count
    for card in cards:
        assert await wallet.points_on_phone(card) == 100 * CHANGES
    assert wallet.dispatcher.queued == 0


def patches(calls: Sequence[Mapping[str, Any]], status: int) -> list[tuple[str, int]]:
    """(object id, loyalty points sent) of every PATCH of an object answered ``status``."""
    return [
        (c["path"].rsplit("/", 1)[-1], c["body"]["loyaltyPoints"]["balance"]["int"])
        for c in calls
        if c["method"] == "PATCH" and "Object/" in c["path"] and c["status"] == status
    ]


async def test_google_500_drops_nothing_and_objects_catch_up(wallet: Wallet) -> None:
    customers = [unique("g") for _ in range(CARDS)]
    cards = [
        await wallet.passes.issue(c, PassKind.STORE_CARD, "default", platform=GOOGLE)
        for c in customers
    ]
    ids = [(await wallet.passes.get(card["_id"]))["google"]["object_id"] for card in cards]
    latest = 100 * CHANGES
    wallet.google.script_failure(500, count=1_000_000, path_contains="Object")
    for n in range(1, CHANGES + 1):
        await change_all(wallet, customers, 100 * n)
    await until(lambda: not wallet.health.up["google"], "Google reported down")
    await until(
        lambda: sum(c["status"] == 500 for c in wallet.google.calls) >= 2 * CARDS,
        "500s answered",
    )
    # A sync that read a pass before its last change and is still retrying when Google
    # recovers rightly lands that older content and is followed by a patch of the latest
    # one, so none may be left in flight across the recovery. Syncs of one pass never
    # overlap: once each object was refused its latest content, no older one is retrying.
    await until(
        lambda: (
            set(ids) <= {o for o, points in patches(wallet.google.calls, 500) if points == latest}
        ),
        "every object refused its latest content",
    )
    assert max(wallet.queue_sizes) <= CARDS
    assert wallet.health.ready

    cleared_at = len(wallet.google.calls)
    wallet.google.clear_failures()
    await until(lambda: wallet.all_pushed(cards), "every Google pass synced after recovery")
    await until(lambda: wallet.health.up["google"], "Google reported up again")
    patched = patches(wallet.google.calls[cleared_at:], 200)
    for object_id in ids:
        google_object = wallet.google.objects[object_id]
        assert google_object["loyaltyPoints"]["balance"]["int"] == latest, google_object
    assert sorted(patched) == sorted((o, latest) for o in ids), (
        "each object updated exactly once, with its latest content"
    )
