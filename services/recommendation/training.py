"""Training as pure computation: interactions -> weighted customer x item matrix -> factors
(``implicit`` ALS or BPR) -> a :class:`FactorModel` with popularity, purchases and co-purchases.

CPU use is bounded: ``implicit`` runs on ``num_threads`` threads and BLAS on one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from services.recommendation.interactions import ORDERED, Interaction, InteractionWeights
from services.recommendation.model import FactorModel, FloatArray, ModelInfo

log = logging.getLogger(__name__)

Algorithm = Literal["als", "bpr"]
Weighting = Literal["bm25", "tfidf", "none"]
# Co-purchases kept per item, and products per order counted (a huge order says little).
TOGETHER_PER_ITEM = 50
MAX_ORDER_ITEMS = 100
# BM25/TF-IDF give items most customers touched a weight <= 0; every interaction stays a
# positive signal.
MIN_CONFIDENCE = 1e-3


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters. ``weighting`` and ``alpha`` (confidence scale) apply to ALS; BPR
    learns from which items were touched and uses ``learning_rate``."""

    algorithm: Algorithm = "als"
    weighting: Weighting = "bm25"
    factors: int = 64
    regularization: float = 20.0
    iterations: int = 15
    alpha: float = 1.0
    learning_rate: float = 0.01
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    num_threads: int = 1
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The parameters, for a model's metadata."""
        return asdict(self)


@dataclass
class InteractionMatrix:
    """Interactions gathered per customer and item: summed decayed weights, purchases, and
    which items each order held."""

    customer_ids: list[str]
    item_ids: list[str]
    weights: sp.csr_matrix
    purchased: sp.csr_matrix
    orders: sp.csr_matrix
    interactions: int
    data_from: datetime | None = None
    data_to: datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(customers, items)."""
        return len(self.customer_ids), len(self.item_ids)


def build_matrix(
    interactions: Iterable[Interaction], weights: InteractionWeights, now: datetime
) -> InteractionMatrix:
    """Sum each customer's decayed weights per item; note purchases and orders."""
    customers: dict[str, int] = {}
    items: dict[str, int] = {}
    orders: dict[tuple[str, str], int] = {}
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    bought_rows: list[int] = []
    bought_cols: list[int] = []
    order_rows: list[int] = []
    earliest: datetime | None = None
    latest: datetime | None = None
    count = 0
    for interaction in interactions:
        weight = weights.weight(interaction.kind, interaction.value, interaction.at, now)
        if weight <= 0:
            continue
        count += 1
        user = customers.setdefault(interaction.customer_id, len(customers))
        item = items.setdefault(interaction.item_id, len(items))
        rows.append(user)
        cols.append(item)
        values.append(weight)
        if interaction.kind == ORDERED:
            bought_rows.append(user)
            bought_cols.append(item)
            key = (interaction.customer_id, interaction.order_id or interaction.event_id)
            order_rows.append(orders.setdefault(key, len(orders)))
        earliest = interaction.at if earliest is None else min(earliest, interaction.at)
        latest = interaction.at if latest is None else max(latest, interaction.at)
    shape = (len(customers), len(items))
    matrix = sp.csr_matrix(
        (np.array(values, dtype=np.float32), (np.array(rows), np.array(cols))),
        shape=shape,
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    purchased = _binary(bought_rows, bought_cols, shape)
    order_matrix = _binary(order_rows, bought_cols, (len(orders), len(items)))
    return InteractionMatrix(
        customer_ids=list(customers),
        item_ids=list(items),
        weights=matrix,
        purchased=purchased,
        orders=order_matrix,
        interactions=count,
        data_from=earliest,
        data_to=latest,
    )


def _binary(rows: list[int], cols: list[int], shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (np.array(rows, dtype=np.int64), np.array(cols))),
        shape=shape,
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def confidence(matrix: sp.csr_matrix, config: TrainingConfig) -> sp.csr_matrix:
    """The ALS input: weights reweighted by BM25 or TF-IDF (rows are customers: items most
    customers touched count less, heavy customers are length-normalised), times ``alpha``."""
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    if config.weighting == "bm25":
        weighted = bm25_weight(matrix, K1=config.bm25_k1, B=config.bm25_b).tocsr()
    elif config.weighting == "tfidf":
        weighted = tfidf_weight(matrix).tocsr()
    else:
        weighted = matrix.copy()
    weighted = sp.csr_matrix(weighted, dtype=np.float32)
    weighted.data = np.maximum(weighted.data, MIN_CONFIDENCE) * np.float32(config.alpha)
    return weighted


def fit_factors(
    matrix: sp.csr_matrix, config: TrainingConfig, show_progress: bool = False
) -> tuple[FloatArray, FloatArray]:
    """User and item factors for a customer x item weight matrix."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    model: Any
    # implicit parallelises itself; BLAS threads on top would oversubscribe the cores (the
    # model checks the BLAS set-up when it is built, so build it inside the limit too).
    with threadpool_limits(limits=1, user_api="blas"):
        if config.algorithm == "als":
            model = AlternatingLeastSquares(
                factors=config.factors,
                regularization=config.regularization,
                iterations=config.iterations,
                num_threads=config.num_threads,
                random_state=config.seed,
            )
            data = confidence(matrix, config)
        else:
            model = BayesianPersonalizedRanking(
                factors=config.factors,
                learning_rate=config.learning_rate,
                regularization=config.regularization,
                iterations=config.iterations,
                num_threads=config.num_threads,
                random_state=config.seed,
            )
            data = sp.csr_matrix(matrix, dtype=np.float32)
        model.fit(data, show_progress=show_progress)
    user_factors: FloatArray = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    item_factors: FloatArray = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    return user_factors, item_factors


def popularity(matrix: sp.csr_matrix) -> npt.NDArray[np.float64]:
    """Distinct customers per item."""
    return np.asarray((matrix > 0).sum(axis=0), dtype=np.float64).ravel()


def co_purchases(orders: sp.csr_matrix, per_item: int = TOGETHER_PER_ITEM) -> sp.csr_matrix:
    """Item x item counts of shared orders, the top ``per_item`` per item."""
    sizes = np.diff(orders.indptr)
    usable = orders[(sizes >= 2) & (sizes <= MAX_ORDER_ITEMS)]
    counts = sp.csr_matrix(usable.T @ usable, dtype=np.float32)
    counts.setdiag(0)
    counts.eliminate_zeros()
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for item in range(counts.shape[0]):
        start, end = counts.indptr[item], counts.indptr[item + 1]
        if start == end:
            continue
        row_cols, row_values = counts.indices[start:end], counts.data[start:end]
        keep = np.argsort(-row_values, kind="stable")[:per_item]
        rows.extend([item] * len(keep))
        cols.extend(row_cols[keep].tolist())
        values.extend(row_values[keep].tolist())
    return sp.csr_matrix(
        (np.array(values, dtype=np.float32), (np.array(rows, dtype=np.int64), np.array(cols))),
        shape=counts.shape,
        dtype=np.float32,
    )


def train_model(
    matrix: InteractionMatrix,
    config: TrainingConfig,
    weights: InteractionWeights,
    version: int,
    now: datetime,
    *,
    show_progress: bool = False,
) -> FactorModel:
    """Fit factors and assemble the model with its metadata."""
    started = time.perf_counter()
    user_factors, item_factors = fit_factors(matrix.weights, config, show_progress)
    seconds = time.perf_counter() - started
    users, items = matrix.shape
    metrics = {
        "train_seconds": round(seconds, 3),
        "density": matrix.weights.nnz / max(1, users * items),
        **matrix.metrics,
    }
    info = ModelInfo(
        version=version,
        algorithm=config.algorithm,
        trained_at=now,
        data_from=matrix.data_from,
        data_to=matrix.data_to,
        interactions=matrix.interactions,
        metrics=metrics,
        parameters={**config.as_dict(), "weights": weights.as_dict()},
    )
    log.info(
        "model trained",
        extra={
            "fields": {
                "version": version,
                "customers": users,
                "items": items,
                "seconds": round(seconds, 2),
            }
        },
    )
    return FactorModel(
        info=info,
        customer_ids=matrix.customer_ids,
        item_ids=matrix.item_ids,
        user_factors=user_factors,
        item_factors=item_factors,
        popularity=popularity(matrix.weights),
        purchased=matrix.purchased,
        together=co_purchases(matrix.orders),
    )
