"""Wallet benchmark (``make bench``). Prints JSON lines with the core count.

(a) Build, sign and zip a loyalty pass, in passes per second on one core, with Lodestar's
    adapter (in-process CMS signing) and with wallet-py3k's own ``create()`` (an ``openssl
    smime`` subprocess per pass) in the same run on the same certificates. Target: 500/s.
(b) On the local stack (every service, SecantusDB, Tansu and the APNs stand-in as processes,
    as ``make run`` starts them): a ``ProfileChanged`` published to Kafka until the APNs
    stand-in receives the push for the card's registered phone, p50/p99 over 1,000 changes
    spread over many customers. Target: p99 <= 500 ms. The wallet's push window (changes
    within it share one push) is part of the latency and is printed with the figures.
(c) Intake: 20,000 ``ProfileChanged`` messages (as the profile service publishes them: loyalty
    figures and consent) over 5,000 customers, 500 of whom hold a loyalty card issued through
    the wallet's own code, published to ``profile.changed`` on a private Tansu and consumed
    by the wallet's own profile-change handler against a private SecantusDB (standalone):
    changes/s from the first fetch until every batch is handled and committed, for the
    service's handler and the handler as it was before the intake cuts (one ``$in`` of every
    id, a consent write per customer, a ``findAndModify`` per card) in turn, each on a fresh
    database. No dispatcher
    runs: the changed cards get their push scheduled in the store (``push_due``, the push
    window later) and no push is sent, so this is the intake alone. In the same run, the
    store floor: per batch of 500, the passes of the batch's customers read with ``$in``
    lists of at most 100, one update-sequence round trip, one bulk write of the cards whose
    figures changed and one of the consent values that changed (known without a read).
    Prints both, the ratio, and database operations and documents per change.

``--part`` picks parts (a, b, c; all by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import httpx
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ReturnDocument, UpdateOne
from wallet import models

from infra.local.stack import Stack, StackPorts
from lodestar.v1 import (
    common_pb2,
    events_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.dbops import OperationCounter
from services.platform.mongo import Document, database
from services.wallet.applepass import PassSigner, build_pkpass
from services.wallet.consumers import ProfileChangedHandler
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.images import image_files
from services.wallet.live import LiveUpdates
from services.wallet.passes import WalletPasses, authentication_token, pass_content
from services.wallet.records import CustomerRecord, NewPass, StoredPass
from services.wallet.settings import WalletSettings
from services.wallet.store import WalletStore, next_update_time
from services.wallet.templates import DEFAULT_TEMPLATE, PassKind
from tests.perf.dbcounts import Window
from tests.perf.servers import private_servers

PASS_TYPE_ID = "pass.com.example.lodestar.bench"
TEAM_ID = "BENCH00001"
TARGET_PER_S = 500
WARMUP_CHANGES = 200
WEB_SERVICE_URL = "https://wallet.example.com"
# An intake that has not handled everything by then has stalled (seen once under load).
STALL_S = 300
TIERS = ("Bronze", "Silver", "Gold", "Platinum")
PURPOSES = ("email_marketing", "wallet_marketing", "sms_marketing")


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count on every line."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def stored_pass(i: int) -> dict[str, Any]:
    """A loyalty pass as the store keeps it."""
    return {
        "_id": f"bench-{i:08d}",
        "kind": PassKind.STORE_CARD.value,
        "template": DEFAULT_TEMPLATE.name,
        "authentication_token": authentication_token(),
        "fields": {"tier": "Gold", "points": 1_000 + i, "cashback_minor": 2_550},
        "created_at": datetime.now(UTC),
    }


def lodestar_build(signer: PassSigner) -> Callable[[int], bytes]:
    def build(i: int) -> bytes:
        return build_pkpass(pass_content(cast(NewPass, stored_pass(i)), WEB_SERVICE_URL), signer)

    return build


def library_build(files: SigningFiles) -> Callable[[int], bytes]:
    """The same card through wallet-py3k alone (its fields, files and create())."""
    colours = DEFAULT_TEMPLATE.colours("Gold")
    images = image_files(colours.background)

    def build(i: int) -> bytes:
        doc = stored_pass(i)
        card = models.StoreCard()
        card.addHeaderField("points", doc["fields"]["points"], "points")
        card.addPrimaryField("cashback", 25.5, "cashback")
        card.addSecondaryField("tier", "Gold", "tier")
        card.addBackField("terms", "terms_text", "terms")
        built = models.Pass(card, passTypeIdentifier=PASS_TYPE_ID, teamIdentifier=TEAM_ID)
        built.organizationName = DEFAULT_TEMPLATE.organization_name
        built.serialNumber = doc["_id"]
        built.description = DEFAULT_TEMPLATE.description
        built.backgroundColor = "rgb({}, {}, {})".format(*colours.background)
        built.barcode = models.Barcode(doc["_id"], models.BarcodeFormat.QR)
        built.webServiceURL = WEB_SERVICE_URL
        built.authenticationToken = doc["authentication_token"]
        for name, data in images.items():
            built.addFile(name, BytesIO(data))
        for language, strings in DEFAULT_TEMPLATE.strings.items():
            text = "".join(f'"{k}" = "{v}";\n' for k, v in strings.items())
            built.addFile(f"{language}.lproj/pass.strings", BytesIO(text.encode()))
        out = built.create(
            str(files.certificate), str(files.key), str(files.intermediate), "", BytesIO()
        )
        return bytes(out.getvalue())

    return build


def measure(build: Callable[[int], bytes], seconds: float) -> tuple[int, float, int]:
    """Passes built, elapsed seconds and the size of the last pass."""
    for i in range(5):  # warm caches (images, key loading) out of the timing
        build(i)
    count, size = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        size = len(build(count))
        count += 1
    return count, time.perf_counter() - started, size


def build_rates(seconds: float) -> None:
    """(a) Run both builders for the same wall time each; print the rates and their ratio."""
    # One core for this process and the openssl subprocesses it starts.
    everything = os.sched_getaffinity(0)
    core = min(everything)
    os.sched_setaffinity(0, {core})
    try:
        _build_rates(seconds)
    finally:
        os.sched_setaffinity(0, everything)


def _build_rates(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        files = ensure_dev_certificates(Path(folder), PASS_TYPE_ID, TEAM_ID)
        signer = PassSigner.from_files(files.certificate, files.key, files.intermediate)
        rates = {}
        for name, build in (
            ("lodestar_adapter_cryptography", lodestar_build(signer)),
            ("wallet_py3k_create_openssl", library_build(files)),
        ):
            count, elapsed, size = measure(build, seconds)
            rates[name] = count / elapsed
            emit(
                {
                    "metric": "wallet_pass_build_sign_zip_per_s",
                    "impl": name,
                    "value": round(rates[name], 1),
                    "passes": count,
                    "seconds": round(elapsed, 2),
                    "pkpass_bytes": size,
                    "pinned_cores": 1,
                }
            )
    ours = rates["lodestar_adapter_cryptography"]
    emit(
        {
            "metric": "wallet_pass_build_speedup",
            "value": round(ours / rates["wallet_py3k_create_openssl"], 2),
            "target_per_s": TARGET_PER_S,
            "meets_target": ours >= TARGET_PER_S,
            "note": "lodestar adapter / wallet-py3k create(), same run, same certificates, "
            "one core",
        }
    )


async def _cards(stack: Stack, customers: int, http: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(customer id, push token) of ``customers`` customers, each with a loyalty card
    registered on a phone of its own."""
    found = []
    async with (
        stack.grpc_channel("identity") as identity_channel,
        stack.grpc_channel("wallet") as wallet_channel,
    ):
        identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
        wallet = wallet_pb2_grpc.WalletServiceStub(wallet_channel)
        for n in range(customers):
            resolved = await identity.Resolve(
                identity_pb2.ResolveRequest(
                    identifiers=[common_pb2.Identifier(type="user_id", value=f"bench-{n}")],
                    event_id=f"bench-identify-{n}",
                )
            )
            card = await wallet.IssuePass(
                wallet_pb2.IssuePassRequest(
                    customer_id=resolved.customer_id, kind=wallet_pb2.PASS_KIND_STORE_CARD
                )
            )
            token = f"{n:064x}"
            registered = await http.post(
                f"{stack.passkit_url}/v1/devices/bench{n}/registrations/"
                f"{card.pass_type_id}/{card.serial_number}",
                json={"pushToken": token},
                headers={"Authorization": f"ApplePass {card.authentication_token}"},
            )
            registered.raise_for_status()
            found.append((resolved.customer_id, token))
    return found


def _change(customer_id: str, points: int) -> events_pb2.ProfileChanged:
    return events_pb2.ProfileChanged(
        event_id=f"bench-change-{customer_id}-{points}",
        customer_id=customer_id,
        changed_paths=["loyalty"],
        loyalty=profile_pb2.Loyalty(points=points, tier="Silver"),
    )


async def _pushes_after(apns: httpx.AsyncClient, index: int, wanted: int) -> None:
    """Poll the stand-in until ``wanted`` pushes arrived after ``index``, or none arrived for
    3 s (changes of one customer close together share a push), or 60 s passed."""
    deadline = time.monotonic() + 60
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = (await apns.get("/fake/pushes", params={"since": index})).json()["count"]
        if count >= wanted:
            return
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif count and time.monotonic() - quiet_since > 3:
            return
        await asyncio.sleep(0.2)


async def _send(
    bus: Bus, cards: list[tuple[str, str]], changes: int, rate: float, first_points: int
) -> list[tuple[str, float]]:
    """Publish ``changes`` profile changes round-robin over the cards at ``rate`` per
    second; returns (push token, wall time) of each."""
    sent: list[tuple[str, float]] = []
    started = time.perf_counter()
    for i in range(changes):
        customer_id, token = cards[i % len(cards)]
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        at = time.time()
        points = first_points + 10 + i
        await bus.publish(topics.PROFILE_CHANGED, customer_id, _change(customer_id, points))
        sent.append((token, at))
    return sent


async def _push_latency(stack: Stack, changes: int, customers: int, rate: float) -> None:
    ca = ssl.create_default_context(cafile=stack.apns_ca)
    async with (
        httpx.AsyncClient(timeout=30) as http,
        httpx.AsyncClient(base_url=stack.apns_url, verify=ca, timeout=30) as apns,
    ):
        cards = await _cards(stack, customers, http)
        bus = Bus(BusConfig(bootstrap_servers=stack.kafka_bootstrap, client_id="bench-wallet"))
        await bus.start()
        try:
            # Warm-up at the same rate, not measured: the stack has just started (consumer
            # groups settling, first connections, first index pages), and the figure is for
            # a platform in its steady state.
            await _send(bus, cards, WARMUP_CHANGES, rate, 0)
            await _pushes_after(apns, 0, WARMUP_CHANGES)
            start_index = (await apns.get("/fake/pushes")).json()["next_index"]
            sent = await _send(bus, cards, changes, rate, WARMUP_CHANGES)
            await _pushes_after(apns, start_index, changes)
        finally:
            await bus.stop()
        listing = (await apns.get("/fake/pushes", params={"since": start_index})).json()
    received: dict[str, list[float]] = {}
    for push in listing["pushes"]:
        if push["status"] == 200:
            at = datetime.fromisoformat(push["received_at"]).timestamp()
            received.setdefault(push["device_token"], []).append(at)
    latencies, missing = [], 0
    for token, at in sent:
        later = [t for t in received.get(token, []) if t >= at]
        if later:
            latencies.append((min(later) - at) * 1000)
        else:
            missing += 1
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    emit(
        {
            "metric": "wallet_profile_change_to_push_ms",
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": round(latencies[-1], 1),
            "changes": changes,
            "warmup_changes": WARMUP_CHANGES,
            "customers": customers,
            "offered_rate_per_s": rate,
            "pushes": sum(len(v) for v in received.values()),
            "changes_without_push": missing,
            "push_window_ms": int(
                stack.env_for("wallet").get(
                    "LODESTAR_WALLET_PUSH_DELAY_MS",
                    str(WalletSettings.model_fields["wallet_push_delay_ms"].default),
                )
            ),
            "target_p99_ms": 500,
            "meets_target": pct(0.99) <= 500,
        }
    )


def push_latency(changes: int, customers: int, rate: float) -> None:
    """(b) The whole local stack on free ports, then the measurement."""
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-wallet-") as folder:
        stack = Stack(
            StackPorts.free(),
            Path(folder) / "logs",
            wallet_certs_dir=Path(folder) / "certs",
            extra_env={"LODESTAR_LOG_LEVEL": "WARNING"},
        )
        (Path(folder) / "logs").mkdir()
        try:
            stack.start()
            asyncio.run(_push_latency(stack, changes, customers, rate))
        finally:
            stack.stop()


def intake_changes(
    changes: int, customers: int, seed: int
) -> tuple[list[events_pb2.ProfileChanged], int]:
    """``changes`` profile changes, each one event's worth on a random customer: points grow
    with orders, the tier follows, and now and then a consent flips. Returns them and how
    many carry a ``wallet_marketing`` consent."""
    rng = random.Random(seed)
    points = [rng.randrange(0, 4_000) for _ in range(customers)]
    consent = [{p: rng.random() < 0.5 for p in PURPOSES} for _ in range(customers)]
    # Most customers decided about some purposes only.
    decided = [{p for p in PURPOSES if rng.random() < 0.7} for _ in range(customers)]
    out = []
    with_wallet_consent = 0
    for n in range(changes):
        c = rng.randrange(customers)
        if rng.random() < 0.3:
            points[c] += rng.randrange(10, 200)
        if rng.random() < 0.02:
            purpose = rng.choice(PURPOSES)
            decided[c].add(purpose)
            consent[c][purpose] = not consent[c][purpose]
        change = events_pb2.ProfileChanged(
            event_id=f"bench-pc-{n}",
            customer_id=f"cust-{c}",
            changed_paths=["behaviour", "event_counts.Product Viewed"],
            loyalty=profile_pb2.Loyalty(
                points=points[c],
                tier=TIERS[min(3, points[c] // 1_500)],
                cashback_balance=common_pb2.Money(currency="EUR", amount_minor=points[c] // 2),
            ),
            consent=[
                profile_pb2.ConsentState(purpose=p, state="granted" if consent[c][p] else "denied")
                for p in sorted(decided[c])
            ],
        )
        with_wallet_consent += "wallet_marketing" in decided[c]
        change.changed_at.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=n))
        out.append(change)
    return out, with_wallet_consent


async def _issue_cards(passes: WalletPasses, holders: Sequence[str]) -> None:
    """A loyalty card for each holder, through the wallet's own issuing code. A round that
    does not finish within ``STALL_S`` ends the run with how far it got (seen twice: issuing
    waited on the local MongoDB server without end, 28 of 500 cards stored)."""
    for start in range(0, len(holders), 50):
        round_ = asyncio.gather(
            *(
                passes.issue(c, PassKind.STORE_CARD, DEFAULT_TEMPLATE.name)
                for c in holders[start : start + 50]
            )
        )
        try:
            await asyncio.wait_for(round_, timeout=STALL_S)
        except TimeoutError:
            raise SystemExit(
                f"issuing cards stalled: {start} of {len(holders)} issued before a round of "
                f"50 waited {STALL_S} s"
            ) from None


async def _intake_through_kafka(
    changes: Sequence[events_pb2.ProfileChanged],
    handler: ProfileChangedHandler,
    bootstrap: str,
    topic: str,
    group: str,
) -> float:
    """Changes/s from the first fetch until the handler handled every batch and the last
    offsets are committed (the changes are on the topic before the clock starts)."""
    await ensure_topics(bootstrap, {topic: 6})
    bus = Bus(BusConfig(bootstrap, group, session_timeout_ms=2000))
    await bus.start()
    await bus.publish_many([(topic, c.customer_id, c) for c in changes])
    handled = 0
    done = asyncio.Event()

    async def counted(batch: Sequence[Delivery[events_pb2.ProfileChanged]]) -> None:
        nonlocal handled
        await handler(batch)
        handled += len(batch)
        if handled >= len(changes):
            done.set()

    subscription = bus.subscribe([topic], group, events_pb2.ProfileChanged, counted)
    await subscription.start()
    started = time.perf_counter()
    consuming = asyncio.create_task(subscription.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=STALL_S)
    except TimeoutError:
        raise SystemExit(
            f"intake stalled: {handled} of {len(changes)} handled after {STALL_S} s"
        ) from None
    await subscription.stop()
    await consuming
    elapsed = time.perf_counter() - started
    await bus.stop()
    return handled / elapsed


def _figures(change: events_pb2.ProfileChanged) -> dict[str, Any]:
    return {
        "points": int(change.loyalty.points),
        "cashback_minor": int(change.loyalty.cashback_balance.amount_minor),
        "tier": change.loyalty.tier,
    }


def _wallet_consent(change: events_pb2.ProfileChanged) -> bool | None:
    for state in change.consent:
        if state.purpose == "wallet_marketing":
            return state.state == "granted"
    return None


async def _intake_floor(
    changes: Sequence[events_pb2.ProfileChanged], store: WalletStore, push_delay: timedelta
) -> float:
    """Changes/s of the least the store needs per batch of 500: the cards of the batch's
    customers (``$in`` of at most 100 ids, side by side), one sequence round trip, one bulk
    write of the cards whose figures changed, one of the consent values that changed."""
    consent: dict[str, bool] = {}
    started = time.perf_counter()
    for start in range(0, len(changes), 500):
        latest = {c.customer_id: c for c in changes[start : start + 500]}
        ids = list(latest)
        found = await asyncio.gather(
            *(
                store.passes.find(
                    {"customer_id": {"$in": ids[i : i + 100]}, "voided": False}
                ).to_list(None)
                for i in range(0, len(ids), 100)
            )
        )
        now = datetime.now(UTC)
        updates = []
        for doc in (d for part in found for d in part):
            figures = _figures(latest[doc["customer_id"]])
            changed = {k: v for k, v in figures.items() if doc["fields"].get(k) != v}
            if changed:
                updates.append((doc, changed))
        consents = []
        for customer_id, change in latest.items():
            value = _wallet_consent(change)
            if value is not None and consent.get(customer_id) != value:
                consent[customer_id] = value
                consents.append(
                    UpdateOne(
                        {"_id": customer_id}, {"$set": {"wallet_marketing": value}}, upsert=True
                    )
                )
        writes = []
        if updates:
            counter = await store.counters.find_one_and_update(
                {"_id": "pass_updates"},
                {"$inc": {"seq": len(updates)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            first = int(counter["seq"]) - len(updates) + 1
            writes.append(
                store.passes.bulk_write(
                    [
                        UpdateOne(
                            {"_id": doc["_id"], "update_seq": doc["update_seq"]},
                            {
                                "$set": {
                                    **{f"fields.{k}": v for k, v in changed.items()},
                                    **{f"announce.{k}": True for k in changed},
                                    "updated_at": next_update_time(doc["updated_at"], now),
                                    "update_seq": first + n,
                                },
                                "$min": {"push_due": now + push_delay},
                            },
                        )
                        for n, (doc, changed) in enumerate(updates)
                    ],
                    ordered=False,
                )
            )
        if consents:
            writes.append(store.customers.bulk_write(consents, ordered=False))
        await asyncio.gather(*writes)
    return len(changes) / (time.perf_counter() - started)


class StoreBefore(WalletStore):
    """The store's batch reads as before the intake cuts: one ``$in`` of every id."""

    async def customers_of(self, customer_ids: Sequence[str]) -> dict[str, CustomerRecord]:
        """Those of these customers the wallet knows, by id."""
        docs = await self.customers.find({"_id": {"$in": list(customer_ids)}}).to_list(None)
        return {d["_id"]: cast(CustomerRecord, d) for d in docs}

    async def passes_of_live(self, customer_ids: Sequence[str]) -> list[StoredPass]:
        """The passes of these customers that are not voided."""
        docs = await self.passes.find(
            {"customer_id": {"$in": list(customer_ids)}, "voided": False}
        ).to_list(None)
        return cast(list[StoredPass], docs)


class LiveBefore(LiveUpdates):
    """Profile changes as before the intake cuts: each customer's changed consent written
    in a round trip of its own, each card changed on its own (``apply``)."""

    async def profile_changes(self, changes: Sequence[events_pb2.ProfileChanged]) -> int:
        """The batch, customer by customer side by side."""
        latest = {c.customer_id: c for c in changes if c.customer_id}
        with_consent = [c for c, change in latest.items() if _wallet_consent(change) is not None]
        known, docs = await asyncio.gather(
            self.store.customers_of(with_consent),
            self.store.passes_of_live(list(latest)),
        )
        cards: dict[str, list[StoredPass]] = {}
        for doc in docs:
            cards.setdefault(doc["customer_id"], []).append(doc)

        async def one(change: events_pb2.ProfileChanged) -> int:
            consent = _wallet_consent(change)
            remembered = known.get(change.customer_id, {})
            if consent is not None and remembered.get("wallet_marketing") != consent:
                await self.store.remember(change.customer_id, {"wallet_marketing": consent})
            done = await asyncio.gather(
                *(self.passes.apply(d, _figures(change)) for d in cards.get(change.customer_id, []))
            )
            return sum(d is not None for d in done)

        return sum(await asyncio.gather(*(one(c) for c in latest.values())))


async def _intake(mongo_uri: str, bootstrap: str, args: argparse.Namespace) -> None:
    changes, with_consent = intake_changes(args.intake_changes, args.intake_customers, args.seed)
    rng = random.Random(args.seed + 1)
    holders = [f"cust-{c}" for c in rng.sample(range(args.intake_customers), args.holders)]
    counter = OperationCounter()
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_uri,
        appname="bench-wallet-intake",
        tz_aware=True,
        event_listeners=[counter],
        socketTimeoutMS=STALL_S * 1000,
    )
    push_delay = WalletSettings.model_fields["wallet_push_delay_ms"].default / 1000
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-wallet-") as folder:
        files = ensure_dev_certificates(Path(folder), PASS_TYPE_ID, TEAM_ID)
        signer = PassSigner.from_files(files.certificate, files.key, files.intermediate)
    for round_ in range(1, args.rounds + 1):
        rates: dict[str, float] = {}
        # Who goes first alternates between rounds.
        for side in ("service", "before") if round_ % 2 else ("before", "service"):
            name = f"bench_intake_{side}_{round_}"
            store = (StoreBefore if side == "before" else WalletStore)(
                database(client, name, "wallet")
            )
            await store.ensure_indexes()
            passes = WalletPasses(store, signer, WEB_SERVICE_URL, push_delay_s=push_delay)
            await _issue_cards(passes, holders)
            window = Window(counter, f"{name}_wallet")
            window.start()
            live = (LiveBefore if side == "before" else LiveUpdates)(passes, store)
            rates[side] = await _intake_through_kafka(
                changes,
                ProfileChangedHandler(live),
                bootstrap,
                f"{topics.PROFILE_CHANGED}.{name}",
                name,
            )
            counts = window.per(len(changes), "change")
            pushes_due = await store.passes.count_documents({"push_due": {"$exists": True}})
            emit(
                {
                    "metric": "wallet_intake_changes_per_s",
                    "handler": side,
                    "round": round_,
                    "value": round(rates[side], 1),
                    "changes": len(changes),
                    "customers": args.intake_customers,
                    "card_holders": len(holders),
                    "changes_with_wallet_consent": with_consent,
                    "cards_with_push_due": pushes_due,
                    "push_window_ms": int(push_delay * 1000),
                    **counts,
                }
            )
        rate = rates["service"]
        name = f"bench_intake_{round_}"
        floor_store = WalletStore(database(client, f"{name}_floor", "wallet"))
        await floor_store.ensure_indexes()
        await _issue_cards(
            WalletPasses(floor_store, signer, WEB_SERVICE_URL, push_delay_s=push_delay), holders
        )
        window = Window(counter, f"{name}_floor_wallet")
        window.start()
        floor = await _intake_floor(changes, floor_store, timedelta(seconds=push_delay))
        emit(
            {
                "metric": "wallet_intake_store_floor_changes_per_s",
                "round": round_,
                "value": round(floor, 1),
                "changes": len(changes),
                "note": "per batch of 500: $in reads of the cards (<= 100 ids each), one "
                "sequence round trip, one bulk write of changed cards and one of changed "
                "consent; same server, same run",
                "intake_to_floor": round(rate / floor, 2),
                "before_to_floor": round(rates["before"] / floor, 2),
                "intake_to_before": round(rate / rates["before"], 2),
                **window.per(len(changes), "change"),
            }
        )
    client.close()


def intake(args: argparse.Namespace) -> None:
    """(c) Private servers (SecantusDB standalone, Tansu) for the intake and its floor."""
    with private_servers("standalone") as (mongo, kafka):
        asyncio.run(_intake(mongo.uri, kafka.bootstrap_servers, args))


def main() -> None:
    """Parts (a), (b) and (c) in turn (or the one ``--part`` names)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="(a): time per builder")
    parser.add_argument("--changes", type=int, default=1_000, help="(b): profile changes")
    parser.add_argument("--customers", type=int, default=100, help="(b): customers with cards")
    parser.add_argument("--rate", type=float, default=50.0, help="(b): changes per second")
    parser.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    parser.add_argument("--intake-changes", type=int, default=20_000, help="(c): changes")
    parser.add_argument("--intake-customers", type=int, default=5_000, help="(c): customers")
    parser.add_argument("--holders", type=int, default=500, help="(c): customers with a card")
    parser.add_argument("--rounds", type=int, default=1, help="(c): times it runs")
    parser.add_argument("--seed", type=int, default=3, help="(c): workload seed")
    args = parser.parse_args()
    if args.part in ("a", "all"):
        build_rates(args.seconds)
    if args.part in ("b", "all"):
        push_latency(args.changes, args.customers, args.rate)
    if args.part in ("c", "all"):
        intake(args)


if __name__ == "__main__":
    main()
