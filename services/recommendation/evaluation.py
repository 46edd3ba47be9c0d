"""Offline evaluation as pure computation: a random holdout per customer, ranking metrics at
k, and the trained model compared with the popularity baseline in the same run.

Protocol: each customer's distinct items are shuffled and a quarter (rounded) is held out; the
model is trained on the rest; each customer's top k excludes the items they trained on.
precision@k = hits / k; AP@k averages precision at each hit over min(|held out|, k); nDCG@k
uses binary gains with the ideal DCG of min(|held out|, k) hits. Customers with nothing held
out are not scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from services.recommendation.training import TrainingConfig, fit_factors, popularity

K = 10
POPULARITY = "popularity"
_BLOCK = 256


def precision_at_k(ranked: Sequence[int], relevant: Collection[int], k: int = K) -> float:
    """Share of the top ``k`` that is relevant."""
    return sum(1 for item in ranked[:k] if item in relevant) / k


def average_precision_at_k(ranked: Sequence[int], relevant: Collection[int], k: int = K) -> float:
    """Mean of precision at each relevant rank, over min(|relevant|, k)."""
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


def ndcg_at_k(ranked: Sequence[int], relevant: Collection[int], k: int = K) -> float:
    """Discounted cumulative gain of the top ``k`` over the best possible."""
    if not relevant:
        return 0.0
    dcg = sum(
        1 / math.log2(rank + 1) for rank, item in enumerate(ranked[:k], start=1) if item in relevant
    )
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class Holdout:
    """The training matrix and each customer's held-out items."""

    train: sp.csr_matrix
    test: list[frozenset[int]]


def split_per_customer(
    matrix: sp.csr_matrix, test_fraction: float = 0.25, seed: int = 0
) -> Holdout:
    """Hold out ``round(test_fraction * n)`` random items of each customer's ``n``."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    matrix = sp.csr_matrix(matrix)
    keep = np.ones(matrix.nnz, dtype=bool)
    test: list[frozenset[int]] = []
    for user in range(matrix.shape[0]):
        start, end = matrix.indptr[user], matrix.indptr[user + 1]
        held = round((end - start) * test_fraction)
        positions = start + rng.permutation(end - start)[:held]
        keep[positions] = False
        test.append(frozenset(matrix.indices[positions].tolist()))
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    train = sp.csr_matrix(
        (matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape
    )
    return Holdout(train, test)


Scorer = Callable[[npt.NDArray[np.intp]], npt.NDArray[np.float64]]


def ranking_metrics(holdout: Holdout, score: Scorer, k: int = K) -> dict[str, float]:
    """Mean precision@k, MAP@k and nDCG@k over the customers with held-out items; ``score``
    gives a (customers x items) score block for an array of customer rows."""
    users = np.array([u for u, items in enumerate(holdout.test) if items], dtype=np.intp)
    totals = {"precision": 0.0, "map": 0.0, "ndcg": 0.0}
    train = holdout.train
    for start in range(0, len(users), _BLOCK):
        block = users[start : start + _BLOCK]
        scores = np.array(score(block), dtype=np.float64)
        for row, user in enumerate(block):
            seen = train.indices[train.indptr[user] : train.indptr[user + 1]]
            scores[row, seen] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, user in enumerate(block):
            ranked = top[row][np.argsort(-scores[row, top[row]], kind="stable")].tolist()
            relevant = holdout.test[user]
            totals["precision"] += precision_at_k(ranked, relevant, k)
            totals["map"] += average_precision_at_k(ranked, relevant, k)
            totals["ndcg"] += ndcg_at_k(ranked, relevant, k)
    count = max(1, len(users))
    return {f"{name}@{k}": value / count for name, value in totals.items()}


def _factor_scorer(
    user_factors: npt.NDArray[np.float32], item_factors: npt.NDArray[np.float32]
) -> Scorer:
    def score(rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        return np.asarray(user_factors[rows] @ item_factors.T, dtype=np.float64)

    return score


@dataclass(frozen=True)
class EvaluationResult:
    """One model's metrics in one run."""

    model: str
    metrics: dict[str, float]
    customers: int

    def as_dict(self) -> dict[str, object]:
        """``{"model": ..., "precision@10": ..., "map@10": ..., "ndcg@10": ...}``."""
        return {"model": self.model, **{k: round(v, 4) for k, v in self.metrics.items()}}


def evaluate(
    matrix: sp.csr_matrix,
    configs: Sequence[TrainingConfig],
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    show_progress: bool = False,
    k: int = K,
) -> list[EvaluationResult]:
    """Each configured model and the popularity baseline on the same holdout."""
    holdout = split_per_customer(matrix, test_fraction, seed)
    scored = sum(1 for items in holdout.test if items)
    results = []
    for config in configs:
        user_factors, item_factors = fit_factors(
            holdout.train, replace(config, seed=seed), show_progress
        )
        metrics = ranking_metrics(holdout, _factor_scorer(user_factors, item_factors), k)
        results.append(EvaluationResult(config.algorithm, metrics, scored))
    counts = popularity(holdout.train)
    baseline = ranking_metrics(holdout, lambda rows: np.tile(counts, (len(rows), 1)), k)
    results.append(EvaluationResult(POPULARITY, baseline, scored))
    return results
