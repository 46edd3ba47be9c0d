"""LODESTAR_RECOMMENDATION_RATING_WEIGHT: whether a rating weighs its value or counts once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.platform.settings import describe_errors
from services.recommendation.interactions import RATED
from services.recommendation.settings import RecommendationSettings
from tests.support.identity import only_test_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    only_test_settings(monkeypatch)


@pytest.mark.parametrize(("setting", "weight_of_a_4"), [("rating", 4.0), ("one", 1.0)])
def test_the_setting_picks_the_rating_weighting(
    monkeypatch: pytest.MonkeyPatch, setting: str, weight_of_a_4: float
) -> None:
    monkeypatch.setenv("LODESTAR_RECOMMENDATION_RATING_WEIGHT", setting)
    weights = RecommendationSettings().interaction_weights()
    assert weights.base(RATED, 4) == weight_of_a_4
    assert weights.as_dict()["rating_counts"] == (1.0 if setting == "rating" else 0.0)


def test_an_unknown_weighting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_RECOMMENDATION_RATING_WEIGHT", "stars")
    with pytest.raises(ValidationError) as error:
        RecommendationSettings()
    assert "RECOMMENDATION_RATING_WEIGHT" in describe_errors(error.value).upper()


def test_every_rating_counts_once_by_default() -> None:
    # The weighting that scored better through the stack (README: the demo's evaluation).
    assert RecommendationSettings().interaction_weights().base(RATED, 5) == 1
