"""Ranking metrics on hand-computed cases, the per-customer holdout, and the comparison with
the popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from services.recommendation.evaluation import (
    POPULARITY,
    Holdout,
    average_precision_at_k,
    evaluate,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    split_per_customer,
)
from services.recommendation.training import TrainingConfig


def test_metrics_of_one_ranking_computed_by_hand() -> None:
    ranked, relevant = [5, 1, 7], {1, 7, 9}
    # Hits at ranks 2 and 3 of 3.
    assert precision_at_k(ranked, relevant, 3) == pytest.approx(2 / 3)
    # (1/2 + 2/3) / min(3 relevant, k=3)
    assert average_precision_at_k(ranked, relevant, 3) == pytest.approx((1 / 2 + 2 / 3) / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx(dcg / ideal)
    assert ndcg_at_k([1, 7, 9], relevant, 3) == pytest.approx(1.0)
    assert average_precision_at_k([1, 2], {1}, 10) == 1.0  # one relevant, found first
    assert precision_at_k([1, 2], {1}, 10) == pytest.approx(0.1)  # always over k
    assert ndcg_at_k([2, 3], set(), 10) == 0.0


def test_ranking_metrics_skip_trained_items_and_customers_without_held_out_items() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    holdout = Holdout(train, [frozenset({2}), frozenset()])

    def score(rows: np.ndarray) -> np.ndarray:
        assert rows.tolist() == [0]  # customer 1 has nothing held out
        return np.array([[10.0, 1.0, 5.0, 3.0]])

    # Item 0 was trained on, so the top 2 is [2, 3]: one hit at rank 1.
    assert ranking_metrics(holdout, score, k=2) == {
        "precision@2": 0.5,
        "map@2": 1.0,
        "ndcg@2": 1.0,
    }


def test_a_quarter_of_each_customers_items_is_held_out_reproducibly() -> None:
    rng = np.random.default_rng(3)
    dense = (rng.random((20, 30)) < 0.4).astype(np.float32)
    matrix = sp.csr_matrix(dense)
    first = split_per_customer(matrix, 0.25, seed=1)
    again = split_per_customer(matrix, 0.25, seed=1)
    assert first.test == again.test
    for user in range(20):
        items = set(np.flatnonzero(dense[user]).tolist())
        trained = set(first.train[user].indices.tolist())
        assert first.test[user] | trained == items
        assert not first.test[user] & trained
        assert len(first.test[user]) == round(len(items) * 0.25)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_per_customer(matrix, 1.0)


def test_the_model_and_the_popularity_baseline_are_measured_on_the_same_holdout() -> None:
    # Two tastes: customers 0-19 like items 0-9, customers 20-39 like items 10-19; the
    # second group's items are a little more popular overall.
    rng = np.random.default_rng(0)
    dense = np.zeros((40, 20), dtype=np.float32)
    dense[:20, :10] = rng.random((20, 10)) < 0.6
    dense[20:, 10:] = rng.random((20, 10)) < 0.8
    config = TrainingConfig(factors=4, regularization=0.1, iterations=10, weighting="none")
    results = evaluate(sp.csr_matrix(dense), [config], seed=0)
    assert [r.model for r in results] == ["als", POPULARITY]
    als, popular = results
    held_out = sum(1 for row in dense if round(row.sum() * 0.25) > 0)
    assert als.customers == popular.customers == held_out
    assert als.metrics["ndcg@10"] > popular.metrics["ndcg@10"] + 0.1
    assert set(als.as_dict()) == {"model", "precision@10", "map@10", "ndcg@10"}
