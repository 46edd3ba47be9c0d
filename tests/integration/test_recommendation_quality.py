"""The quality gate on real data: MovieLens-100k (shipped inside recbole, read from disk), a
75/25 random split per customer, every rating one positive interaction. The configured ALS
must reach nDCG@10 >= 0.40 and 1.5 times the popularity baseline's, in the same run."""

from __future__ import annotations

import pytest

from services.recommendation.datasets import movielens_catalog, movielens_dir, movielens_ratings
from services.recommendation.evaluation import POPULARITY, EvaluationResult, evaluate
from services.recommendation.interactions import InteractionWeights
from services.recommendation.settings import RecommendationSettings
from services.recommendation.training import build_matrix


@pytest.fixture(scope="module")
def results() -> dict[str, EvaluationResult]:
    """One training and evaluation run for the module (about a second)."""
    interactions = movielens_ratings()
    matrix = build_matrix(interactions, InteractionWeights(), interactions[0].at)
    config = RecommendationSettings().training_config()
    return {r.model: r for r in evaluate(matrix.weights, [config], seed=0)}


def test_movielens_is_read_from_the_installed_package() -> None:
    folder = movielens_dir()
    assert folder.parts[-3:] == ("recbole", "dataset_example", "ml-100k")
    ratings = movielens_ratings(folder)
    assert len(ratings) == 100_000
    assert len({r.customer_id for r in ratings}) == 943
    catalog = movielens_catalog(folder)
    assert len(catalog) == 1_682
    assert (catalog[0].item_id, catalog[0].name, catalog[0].category) == (
        "1",
        "Toy Story",
        "Animation",
    )


def test_als_reaches_the_quality_target(results: dict[str, EvaluationResult]) -> None:
    als, popular = results["als"], results[POPULARITY]
    assert als.customers == popular.customers == 943
    assert als.metrics["ndcg@10"] >= 0.40
    assert als.metrics["ndcg@10"] >= 1.5 * popular.metrics["ndcg@10"]
    assert als.metrics["precision@10"] > popular.metrics["precision@10"]
    assert als.metrics["map@10"] > popular.metrics["map@10"]
