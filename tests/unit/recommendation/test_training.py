"""From interactions to a model: summed decayed weights, purchases, orders, co-purchases,
popularity, and factors that rank a customer's taste first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.recommendation.interactions import (
    ADDED,
    ORDERED,
    RATED,
    VIEWED,
    Interaction,
    InteractionWeights,
)
from services.recommendation.recommender import PERSONALIZED, Recommender
from services.recommendation.training import (
    TrainingConfig,
    build_matrix,
    co_purchases,
    confidence,
    train_model,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def at(days_ago: float) -> datetime:
    return NOW - timedelta(days=days_ago)


def test_weights_sum_per_customer_and_item_with_decay() -> None:
    interactions = [
        Interaction("e1", "c1", "a", VIEWED, 1, at(0)),
        Interaction("e2", "c1", "a", ADDED, 1, at(10)),
        Interaction("e3", "c1", "b", ORDERED, 1, at(10), "o1"),
        Interaction("e3", "c1", "a", ORDERED, 1, at(10), "o1"),
        Interaction("e4", "c2", "b", RATED, 4, at(20)),
    ]
    matrix = build_matrix(interactions, InteractionWeights(half_life_days=10), NOW)
    assert matrix.customer_ids == ["c1", "c2"]
    assert matrix.item_ids == ["a", "b"]
    dense = matrix.weights.toarray()
    # a: view 1 today + add 3 and order 5 ten days ago (halved); b: order 5 halved.
    assert dense[0].tolist() == pytest.approx([1 + 1.5 + 2.5, 2.5])
    assert dense[1].tolist() == pytest.approx([0, 4 * 0.25])
    assert matrix.purchased.toarray().tolist() == [[1, 1], [0, 0]]
    assert matrix.orders.toarray().tolist() == [[1, 1]]
    assert (matrix.data_from, matrix.data_to, matrix.interactions) == (at(20), at(0), 5)


def test_zero_weights_drop_a_kind() -> None:
    interactions = [
        Interaction("e1", "c1", "a", VIEWED, 1, NOW),
        Interaction("e2", "c2", "b", ADDED, 1, NOW),
    ]
    matrix = build_matrix(interactions, InteractionWeights(viewed=0), NOW)
    assert (matrix.customer_ids, matrix.item_ids, matrix.interactions) == (["c2"], ["b"], 1)


def test_co_purchases_count_shared_orders_and_ignore_single_item_orders() -> None:
    import scipy.sparse as sp

    orders = sp.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 1, 0]], dtype=np.float32)
    )
    counts = co_purchases(orders).toarray()
    assert counts[0].tolist() == [0, 2, 2, 0]
    assert counts[1].tolist() == [2, 0, 1, 0]
    assert counts[3].tolist() == [0, 0, 0, 0]
    assert co_purchases(orders, per_item=1).toarray()[0].tolist() == [0, 2, 0, 0]


def test_bm25_keeps_every_interaction_positive() -> None:
    import scipy.sparse as sp

    everyone = sp.csr_matrix(np.ones((3, 2), dtype=np.float32))  # idf <= 0 for every item
    weighted = confidence(everyone, TrainingConfig(weighting="bm25", alpha=2))
    assert weighted.nnz == 6
    assert (weighted.data > 0).all()


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_a_trained_model_ranks_each_customers_taste_first(algorithm: str) -> None:
    interactions = []
    for c in range(12):
        group = range(0, 5) if c < 6 else range(5, 10)
        for i in group:
            if (c + i) % 5:  # each customer misses one item of their group
                interactions.append(Interaction(f"e{c}-{i}", f"c{c}", f"i{i}", VIEWED, 1, NOW))
    matrix = build_matrix(interactions, InteractionWeights(), NOW)
    config = TrainingConfig(
        algorithm=algorithm,  # type: ignore[arg-type]
        factors=4,
        regularization=0.01,
        iterations=100 if algorithm == "bpr" else 10,
        learning_rate=0.05,
        weighting="none",
    )
    model = train_model(matrix, config, InteractionWeights(), 4, NOW)
    assert model.info.version == 4
    assert model.info.algorithm == algorithm
    assert model.info.parameters["factors"] == 4
    assert model.info.metrics["train_seconds"] >= 0
    assert model.popularity.sum() == len(interactions)
    recommender = Recommender(model, {})
    first_group = {f"i{i}" for i in range(5)}
    answer = recommender.recommend("c0", 4)
    assert answer.strategy == PERSONALIZED
    assert sum(item in first_group for item, _ in answer.items) >= 3
