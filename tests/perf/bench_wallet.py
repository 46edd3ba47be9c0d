"""Wallet benchmark (``make bench``). Prints JSON lines with the core count.

(a) Build, sign and zip a loyalty pass, in passes per second on one core, with Lodestar's
    adapter (in-process CMS signing) and with wallet-py3k's own ``create()`` (an ``openssl
    smime`` subprocess per pass) in the same run on the same certificates. Target: 500/s.
(b) On the local stack (every service, SecantusDB, Tansu and the APNs stand-in as processes,
    as ``make run`` starts them): a ``ProfileChanged`` published to Kafka until the APNs
    stand-in receives the push for the card's registered phone, p50/p99 over 1,000 changes
    spread over many customers. Target: p99 <= 500 ms. The wallet's push window (changes
    within it share one push) is part of the latency and is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
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
from services.platform.bus import Bus, BusConfig
from services.wallet.applepass import PassSigner, build_pkpass
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.images import image_files
from services.wallet.passes import authentication_token, pass_content
from services.wallet.settings import WalletSettings
from services.wallet.templates import DEFAULT_TEMPLATE, PassKind

PASS_TYPE_ID = "pass.com.example.lodestar.bench"
TEAM_ID = "BENCH00001"
TARGET_PER_S = 500
WARMUP_CHANGES = 200
WEB_SERVICE_URL = "https://wallet.example.com"


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
        return build_pkpass(pass_content(stored_pass(i), WEB_SERVICE_URL), signer)

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


def main() -> None:
    """Part (a), then part (b)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="(a): time per builder")
    parser.add_argument("--changes", type=int, default=1_000, help="(b): profile changes")
    parser.add_argument("--customers", type=int, default=100, help="(b): customers with cards")
    parser.add_argument("--rate", type=float, default=50.0, help="(b): changes per second")
    parser.add_argument("--part", choices=("a", "b", "all"), default="all")
    args = parser.parse_args()
    if args.part in ("a", "all"):
        build_rates(args.seconds)
    if args.part in ("b", "all"):
        push_latency(args.changes, args.customers, args.rate)


if __name__ == "__main__":
    main()
