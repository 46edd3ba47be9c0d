"""Recommendation benchmark.

(a) Training: the configured model (ALS by default) on MovieLens-100k, from interactions to a
    servable model: seconds.
(b) ``Recommend`` in-process: the servicer called directly (request validation, scoring every
    item, exclusions, top-n, the response message) for random customers, n=10, purchases
    excluded: p50/p99 in ms (target p99 <= 5 ms).
(c) ``Recommend`` over gRPC on the loopback at a fixed 200 requests/s (open loop: requests are
    sent on schedule whether or not earlier ones returned): p50/p99 in ms (target p99 <= 10 ms).

Prints JSON lines with the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from lodestar.v1 import recommendation_pb2, recommendation_pb2_grpc
from services.platform.rpc import GrpcServer
from services.recommendation.api import RecommendationServicer
from services.recommendation.datasets import movielens_catalog, movielens_ratings
from services.recommendation.interactions import InteractionWeights
from services.recommendation.recommender import Recommender
from services.recommendation.server import SERVICE_NAME
from services.recommendation.serving import Recommendations
from services.recommendation.settings import RecommendationSettings
from services.recommendation.store import RecommendationStore
from services.recommendation.trainer import Trainer
from services.recommendation.training import build_matrix, train_model


def emit(record: dict[str, Any]) -> None:
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency_record(name: str, seconds: list[float], **extra: Any) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "benchmark": name,
        "requests": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        **extra,
    }


async def main(calls: int, rate: float, seconds: float) -> None:
    settings = RecommendationSettings()
    config = settings.training_config()
    interactions = movielens_ratings()
    started = time.perf_counter()
    matrix = build_matrix(interactions, InteractionWeights(), interactions[0].at)
    model = train_model(matrix, config, InteractionWeights(), 1, interactions[0].at)
    emit(
        {
            "benchmark": "train_movielens_100k",
            "algorithm": config.algorithm,
            "factors": config.factors,
            "iterations": config.iterations,
            "threads": config.num_threads,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )

    serving = Recommendations(cast(RecommendationStore, None))
    serving.recommender = Recommender(model, {i.item_id: i for i in movielens_catalog()})
    servicer = RecommendationServicer(serving, cast(Trainer, None), cast(RecommendationStore, None))
    customers = model.customer_ids
    rng = random.Random(0)
    requests = [
        recommendation_pb2.RecommendRequest(
            customer_id=rng.choice(customers), n=10, exclude_purchased=True
        )
        for _ in range(calls)
    ]
    context = cast(Any, None)
    for request in requests[:200]:  # warm up
        await servicer.Recommend(request, context)
    timings = []
    for request in requests:
        begun = time.perf_counter()
        await servicer.Recommend(request, context)
        timings.append(time.perf_counter() - begun)
    emit(latency_record("recommend_in_process", timings, items=len(model.item_ids)))

    server = GrpcServer(
        "127.0.0.1",
        0,
        [SERVICE_NAME],
        lambda s: recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(servicer, s),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
            for request in requests[:200]:
                await stub.Recommend(request)
            latencies: list[float] = []
            failures = 0

            async def one(request: recommendation_pb2.RecommendRequest) -> None:
                nonlocal failures
                begun = time.perf_counter()
                try:
                    await stub.Recommend(request, timeout=5)
                except grpc.aio.AioRpcError:
                    failures += 1
                    return
                latencies.append(time.perf_counter() - begun)

            total = int(rate * seconds)
            interval = 1 / rate
            start = time.perf_counter()
            pending = []
            for k in range(total):
                delay = start + k * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(one(requests[k % len(requests)])))
            await asyncio.gather(*pending)
            achieved = total / (time.perf_counter() - start)
    finally:
        await server.stop(0)
    emit(
        latency_record(
            "recommend_grpc",
            latencies,
            target_rps=rate,
            achieved_rps=round(achieved, 1),
            failures=failures,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="in-process calls")
    parser.add_argument("--rate", type=float, default=200.0, help="gRPC requests per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="gRPC run length")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.rate, arguments.seconds))
