"""Settings of the recommendation service."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import timedelta
from typing import Literal

from pydantic import Field

from services.platform.settings import ServiceSettings
from services.recommendation.interactions import InteractionWeights
from services.recommendation.trainer import TrainingPlan
from services.recommendation.training import Algorithm, TrainingConfig, Weighting

_MODEL = TrainingConfig()
# The TrainingConfig fields a setting (and the evaluate command's flags) may change.
SETTABLE_HYPERPARAMETERS = tuple(f.name for f in fields(TrainingConfig) if f.name != "seed")


class RecommendationSettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_RECOMMENDATION_GRPC_PORT``."""

    grpc_port: int = Field(
        50054, ge=0, le=65_535, validation_alias="LODESTAR_RECOMMENDATION_GRPC_PORT"
    )
    # Interaction weights; a rating is worth the rating times the rated weight. With a
    # half-life, weights halve every that many days of age when a model is trained (0: off).
    recommendation_weight_viewed: float = Field(1.0, ge=0, le=1_000)
    recommendation_weight_added: float = Field(3.0, ge=0, le=1_000)
    recommendation_weight_ordered: float = Field(5.0, ge=0, le=1_000)
    recommendation_weight_rated: float = Field(1.0, ge=0, le=1_000)
    # "rating": a rating weighs its value (1-5) times the rated weight; "one": every rating is
    # one interaction. "one" measured better through the stack on the MovieLens demo (nDCG@10
    # 0.439 against 0.425, held-out split taken before loading; see the README).
    recommendation_rating_weight: Literal["rating", "one"] = "one"
    recommendation_half_life_days: float = Field(90.0, ge=0, le=3_650)
    # Interactions older than this are left out of training.
    recommendation_window_days: int = Field(365, ge=1, le=3_650)

    # The model: ALS (confidence from BM25, TF-IDF or raw weights, times alpha) or BPR.
    # The defaults scored nDCG@10 0.48 on MovieLens-100k (see the README).
    # Each is ``recommendation_<TrainingConfig field>``, defaulting to TrainingConfig's own.
    recommendation_algorithm: Algorithm = _MODEL.algorithm
    recommendation_weighting: Weighting = _MODEL.weighting
    recommendation_factors: int = Field(_MODEL.factors, ge=1, le=1_024)
    recommendation_regularization: float = Field(_MODEL.regularization, ge=0, le=10_000)
    recommendation_iterations: int = Field(_MODEL.iterations, ge=1, le=1_000)
    recommendation_alpha: float = Field(_MODEL.alpha, gt=0, le=10_000)
    recommendation_learning_rate: float = Field(_MODEL.learning_rate, gt=0, le=1)
    recommendation_bm25_k1: float = Field(_MODEL.bm25_k1, ge=0, le=10_000)
    recommendation_bm25_b: float = Field(_MODEL.bm25_b, ge=0, le=1)
    # Training threads: keep CPU use modest beside the request path.
    recommendation_num_threads: int = Field(_MODEL.num_threads, ge=1, le=64)

    # Train this often (every replica tries; one wins the lease), look for a newer model
    # this often, keep this many versions.
    recommendation_train_interval_s: float = Field(6 * 3_600, ge=10)
    recommendation_model_poll_s: float = Field(30.0, ge=0.1, le=3_600)
    recommendation_models_kept: int = Field(3, ge=1, le=100)
    # Also fit on a 75/25 holdout and store precision/MAP/nDCG@10 with the model (twice the CPU).
    recommendation_holdout_metrics: bool = False
    # A crashed trainer's lease expires after this long.
    recommendation_train_lease_s: float = Field(3_600, ge=10, le=86_400)

    def interaction_weights(self) -> InteractionWeights:
        """The weights and half-life these settings describe."""
        return InteractionWeights(
            viewed=self.recommendation_weight_viewed,
            added=self.recommendation_weight_added,
            ordered=self.recommendation_weight_ordered,
            rated=self.recommendation_weight_rated,
            half_life_days=self.recommendation_half_life_days,
            rating_counts=self.recommendation_rating_weight == "rating",
        )

    def training_config(self) -> TrainingConfig:
        """The hyper-parameters these settings describe (the seed is not a setting)."""
        return replace(
            _MODEL,
            **{name: getattr(self, f"recommendation_{name}") for name in SETTABLE_HYPERPARAMETERS},
        )

    def training_plan(self) -> TrainingPlan:
        """Everything a training run needs from the settings."""
        return TrainingPlan(
            config=self.training_config(),
            weights=self.interaction_weights(),
            window_days=self.recommendation_window_days,
            keep_models=self.recommendation_models_kept,
            holdout_metrics=self.recommendation_holdout_metrics,
            lease=timedelta(seconds=self.recommendation_train_lease_s),
        )
