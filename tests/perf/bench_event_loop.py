"""Event-loop benchmark (issue 16, keeping the loops free). Prints JSON lines.

(a) Segmentation's purchase-model fit and scoring over a synthetic population: on the event
    loop (as before) and on a worker thread (as ``Scoring.recompute`` runs it now), alternating
    in one run. A heartbeat task asks for the loop every millisecond and records the longest
    gap it saw (what a gRPC call or a consumer heartbeat waits) and how often it ran.
(b) The wallet's ``ListPasses`` of 200 Google passes (SecantusDB and the Google Wallet
    stand-in as real servers, the servicer in process): CPU milliseconds per call with the
    save link signed per pass per call (as before) and signed once and reused (now),
    alternating in one run after one warm-up call each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

from infra.local.fake_google import (
    DEV_ISSUER_ID,
    FakeGoogleWallet,
    ensure_google_dev_service_account,
)
from infra.local.servers import MongoWireServer, free_port
from lodestar.v1 import wallet_pb2
from services.platform.mongo import database, mongo_client
from services.segmentation import rfm
from services.segmentation.scoring import ScoringSettings, fit_and_score
from services.segmentation.transactions import CustomerSummary
from services.wallet.api import Context, WalletServicer
from services.wallet.applepass import PassSigner
from services.wallet.clients.google import GoogleWalletClient, ServiceAccount, save_jwt
from services.wallet.devcerts import ensure_dev_certificates
from services.wallet.google import Resource
from services.wallet.googlepasses import GooglePasses
from services.wallet.live import LiveUpdates
from services.wallet.passes import GOOGLE, WalletPasses
from services.wallet.store import WalletStore
from services.wallet.templates import PassKind


def population(count: int, seed: int) -> tuple[list[CustomerSummary], list[rfm.CustomerActivity]]:
    """Buyers with varied histories in weeks (a third bought once), as scoring reads them."""
    rng = random.Random(seed)
    summaries, histories = [], []
    for n in range(count):
        age_days = rng.randint(30, 700)
        days = rng.choice([1, 1, 2, 3, 4, 6, 9, 14])
        span = rng.randint(0, age_days) if days > 1 else 0
        summaries.append(
            CustomerSummary(
                customer_id=f"c{n}",
                frequency=days - 1,
                recency=span / 7.0,
                T=age_days / 7.0,
                monetary=round(rng.uniform(10, 150), 2) if days > 1 else 0.0,
            )
        )
        histories.append(rfm.CustomerActivity(f"c{n}", age_days - span, days, 40.0 * days))
    return summaries, histories


async def loop_gaps(work: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """Run ``work`` beside a 1 ms heartbeat: wall ms, process CPU ms, longest gap, ticks."""
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.01)
    gaps.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    beating.cancel()
    await asyncio.gather(beating, return_exceptions=True)
    return {
        "wall_ms": round(wall * 1000, 1),
        "cpu_ms": round(cpu * 1000, 1),
        "loop_max_gap_ms": round(max(gaps, default=wall) * 1000, 1),
        "heartbeat_ticks": len(gaps),
    }


async def bench_fit(customers: int, rounds: int) -> None:
    summaries, histories = population(customers, seed=16)
    settings = ScoringSettings()

    async def on_loop() -> None:
        fit_and_score(summaries, histories, settings)

    async def on_thread() -> None:
        await asyncio.to_thread(fit_and_score, summaries, histories, settings)

    for round_no in range(rounds):
        for mode, work in (("on the loop (before)", on_loop), ("worker thread (now)", on_thread)):
            figures = await loop_gaps(work)
            print(
                json.dumps(
                    {
                        "bench": "scoring fit",
                        "customers": customers,
                        "mode": mode,
                        "round": round_no,
                        **figures,
                    }
                )
            )


class SignedPerCall(GoogleWalletClient):
    """The client as it was: every save link signed anew."""

    def save_link(
        self, objects: Sequence[tuple[Resource, str]], origins: Sequence[str] = ()
    ) -> str:
        return self.save_url_base + save_jwt(self.account, objects, origins, self.clock())


async def bench_list_passes(count: int, rounds: int, work_dir: Path) -> None:
    mongo = MongoWireServer(free_port(), work_dir)
    mongo.start()
    key = ensure_google_dev_service_account(work_dir / "google", "http://127.0.0.1:1/token")
    fake = FakeGoogleWallet(key)
    await fake.start()
    files = ensure_dev_certificates(work_dir / "certs", "pass.com.example.bench", "TEAMBENCH1")
    signer = PassSigner.from_files(files.certificate, files.key, files.intermediate)
    client = mongo_client(mongo.uri, "bench")
    apis = {
        mode: kind(fake.api_base_url, fake.token_uri, DEV_ISSUER_ID, ServiceAccount.from_file(key))
        for mode, kind in (
            ("signed per call (before)", SignedPerCall),
            ("signed once, reused (now)", GoogleWalletClient),
        )
    }
    try:
        store = WalletStore(database(client, "bench_wallet", "wallet"))
        await store.ensure_indexes()
        servicers = {}
        for mode, api in apis.items():
            google = GooglePasses(api, DEV_ISSUER_ID, "http://127.0.0.1:1")
            passes = WalletPasses(store, signer, "http://127.0.0.1:1", google=google)
            servicers[mode] = WalletServicer(passes, LiveUpdates(passes, store))
        issuer = next(iter(servicers.values())).passes
        customers = [f"bench-{n}" for n in range(count // 4)]
        for customer in customers:
            for _ in range(4):
                await issuer.issue(customer, PassKind.STORE_CARD, "default", platform=GOOGLE)
        request = wallet_pb2.ListPassesRequest(customer_ids=customers)
        context = cast(Context, None)
        for servicer in servicers.values():
            await servicer.ListPasses(request, context)  # warm: connections, the token, the cache
        for round_no in range(rounds):
            for mode, servicer in servicers.items():
                cpu, wall = time.process_time(), time.perf_counter()
                answer = await servicer.ListPasses(request, context)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                listed = sum(len(c.passes) for c in answer.customers)
                print(
                    json.dumps(
                        {
                            "bench": "ListPasses",
                            "google_passes": listed,
                            "mode": mode,
                            "round": round_no,
                            "cpu_ms": round(cpu * 1000, 1),
                            "wall_ms": round(wall * 1000, 1),
                        }
                    )
                )
    finally:
        for api in apis.values():
            await api.aclose()
        client.close()
        await fake.stop()
        mongo.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_000, help="population of the fit")
    parser.add_argument("--passes", type=int, default=200, help="Google passes listed")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    await bench_fit(args.customers, args.rounds)
    with tempfile.TemporaryDirectory() as work_dir:
        await bench_list_passes(args.passes, args.rounds, Path(work_dir))


if __name__ == "__main__":
    asyncio.run(main())
