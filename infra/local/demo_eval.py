"""Recommendation quality through the running services: the offline protocol's holdout
(services/recommendation/evaluation.py: a random quarter of each customer's films, the same
seed, the same split function) is taken BEFORE loading, only the training part goes through
the ingest API (the demo loader: ratings, and orders for 4-5), the service trains, and its
gRPC ``BatchRecommend`` answers for each customer with held-out films, excluding the films
they trained on (as the offline protocol does). Needs a fresh stack: customers already
holding MovieLens events would leak the held-out films into training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from infra.local.demo_load import DemoLoadError, DemoTarget, customer_ids, load, train
from infra.local.movielens import customer_user_id, film_product_id, read_source
from lodestar.v1 import recommendation_pb2, recommendation_pb2_grpc
from services.recommendation.datasets import movielens_ratings
from services.recommendation.evaluation import (
    K,
    average_precision_at_k,
    ndcg_at_k,
    precision_at_k,
    split_per_customer,
)
from services.recommendation.interactions import InteractionWeights
from services.recommendation.training import build_matrix

RECOMMEND_BATCH = 200


@dataclass(frozen=True)
class Split:
    """Per MovieLens user: the films trained on and the films held out."""

    train: dict[str, list[str]]
    test: dict[str, frozenset[str]]


def holdout_split(
    folder: Path, users: Sequence[str], test_fraction: float = 0.25, seed: int = 0
) -> Split:
    """The offline protocol's split of ``users``' ratings (file order, every rating one
    interaction, :func:`split_per_customer` with ``seed``)."""
    wanted = set(users)
    ratings = [r for r in movielens_ratings(folder) if r.customer_id in wanted]
    matrix = build_matrix(ratings, InteractionWeights(), datetime.now(UTC))
    holdout = split_per_customer(matrix.weights, test_fraction, seed)
    train: dict[str, list[str]] = {}
    test: dict[str, frozenset[str]] = {}
    weights = holdout.train
    for row, user in enumerate(matrix.customer_ids):
        columns = weights.indices[weights.indptr[row] : weights.indptr[row + 1]]
        train[user] = [matrix.item_ids[c] for c in columns.tolist()]
        test[user] = frozenset(matrix.item_ids[c] for c in holdout.test[row])
    return Split(train, test)


def recommend_all(
    target: DemoTarget, customers: Mapping[str, str], split: Split, k: int = K
) -> dict[str, list[str]]:
    """The service's top ``k`` film ids for each user with held-out films (their training
    films excluded)."""
    users = [u for u, held in split.test.items() if held and customer_user_id(u) in customers]
    ranked: dict[str, list[str]] = {}
    with target.channel("recommendation") as channel:
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        for start in range(0, len(users), RECOMMEND_BATCH):
            chunk = users[start : start + RECOMMEND_BATCH]
            response = stub.BatchRecommend(
                recommendation_pb2.BatchRecommendRequest(
                    requests=[
                        recommendation_pb2.RecommendRequest(
                            customer_id=customers[customer_user_id(u)],
                            n=k,
                            exclude_items=[film_product_id(i) for i in split.train[u]],
                        )
                        for u in chunk
                    ]
                ),
                timeout=120,
            )
            for user, answer in zip(chunk, response.responses, strict=True):
                ranked[user] = [item.item_id for item in answer.items]
    return ranked


def metrics(ranked: Mapping[str, list[str]], split: Split, k: int = K) -> dict[str, float]:
    """Mean precision@k, MAP@k and nDCG@k over the users with held-out films."""
    totals = {"precision": 0.0, "map": 0.0, "ndcg": 0.0}
    scored = [u for u, held in split.test.items() if held]
    for user in scored:
        relevant = {int(i) for i in split.test[user]}
        top = [_film_number(item) for item in ranked.get(user, [])]
        totals["precision"] += precision_at_k(top, relevant, k)
        totals["map"] += average_precision_at_k(top, relevant, k)
        totals["ndcg"] += ndcg_at_k(top, relevant, k)
    count = max(1, len(scored))
    return {f"{name}@{k}": round(value / count, 4) for name, value in totals.items()}


def _film_number(item_id: str) -> int:
    """``film-<n>`` as n (-1 for an item that is not a MovieLens film: never relevant)."""
    tail = item_id.removeprefix("film-")
    return int(tail) if tail.isdigit() else -1


def evaluate_through_stack(
    target: DemoTarget,
    folder: Path,
    *,
    users: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    stream: TextIO | None = None,
) -> dict[str, object]:
    """Split, load the training part, train, ask the service; the metrics as a JSON object."""
    source = read_source(folder, users)
    user_ids = [u.user_id for u in source.users]
    already = customer_ids(target, [customer_user_id(u) for u in user_ids[:50]])
    if already:
        raise DemoLoadError(
            "the stack already holds MovieLens customers: evaluate against a fresh stack "
            "(make run --no-demo, or a private one)"
        )
    split = holdout_split(folder, user_ids, test_fraction, seed)
    kept = [(u, i) for u, films in split.train.items() for i in films]
    loaded = load(source.restricted(kept), target, stream=stream)
    version = train(target)
    ranked = recommend_all(target, loaded.customers, split)
    with target.channel("recommendation") as channel:
        info = recommendation_pb2_grpc.RecommendationServiceStub(channel).GetModelInfo(
            recommendation_pb2.GetModelInfoRequest(), timeout=30
        )
    weights = json.loads(info.parameters_json or "{}").get("weights", {})
    return {
        "model": "als-through-stack",
        **metrics(ranked, split),
        "customers": sum(1 for held in split.test.values() if held),
        "model_version": version,
        "rating_weight": "rating" if weights.get("rating_counts", 1.0) else "one",
        "weights": weights,
        "events": loaded.events,
        "events_per_s": round(loaded.events_per_s, 1),
        "test_fraction": test_fraction,
        "seed": seed,
    }
