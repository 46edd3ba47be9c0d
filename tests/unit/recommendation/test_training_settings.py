"""The model's hyper-parameters are written once: TrainingConfig holds the defaults, every
``LODESTAR_RECOMMENDATION_<FIELD>`` setting and every evaluate flag maps onto its field."""

from __future__ import annotations

from dataclasses import fields

import pytest

from services.recommendation.cli import _parser, evaluation_config
from services.recommendation.settings import SETTABLE_HYPERPARAMETERS, RecommendationSettings
from services.recommendation.training import TrainingConfig
from tests.support.identity import only_test_settings

# A value unlike every default, per field.
CHANGED: dict[str, tuple[str, object]] = {
    "algorithm": ("bpr", "bpr"),
    "weighting": ("tfidf", "tfidf"),
    "factors": ("17", 17),
    "regularization": ("3.5", 3.5),
    "iterations": ("7", 7),
    "alpha": ("2.5", 2.5),
    "learning_rate": ("0.2", 0.2),
    "bm25_k1": ("12", 12.0),
    "bm25_b": ("0.3", 0.3),
    "num_threads": ("2", 2),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    only_test_settings(monkeypatch)


def test_every_field_but_the_seed_is_a_setting() -> None:
    assert set(SETTABLE_HYPERPARAMETERS) == {f.name for f in fields(TrainingConfig)} - {"seed"}
    assert set(CHANGED) == set(SETTABLE_HYPERPARAMETERS)


def test_the_defaults_are_training_configs_own() -> None:
    assert RecommendationSettings().training_config() == TrainingConfig()


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_each_setting_reaches_its_field(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    raw, value = CHANGED[name]
    monkeypatch.setenv(f"LODESTAR_RECOMMENDATION_{name.upper()}", raw)
    config = RecommendationSettings().training_config()
    assert getattr(config, name) == value
    others = {f.name for f in fields(TrainingConfig)} - {name}
    assert all(getattr(config, o) == getattr(TrainingConfig(), o) for o in others)


def test_evaluate_flags_override_the_settings() -> None:
    base = TrainingConfig(factors=32, alpha=4.0)
    arguments = _parser().parse_args(
        ["evaluate", "--algorithm", "bpr", "--factors", "8", "--learning-rate", "0.05"]
    )
    config = evaluation_config(arguments, base)
    assert (config.algorithm, config.factors, config.learning_rate) == ("bpr", 8, 0.05)
    # What no flag names keeps the settings' value.
    assert (config.alpha, config.iterations) == (4.0, base.iterations)
