"""Serving from one snapshot: personal ranking, exclusions, category filters, similar items,
items bought together, and popularity for customers and items the model has not seen."""

from __future__ import annotations

from services.recommendation.recommender import (
    BOUGHT_TOGETHER,
    PERSONALIZED,
    POPULAR,
    POPULAR_IN_CATEGORY,
    SIMILAR_ITEMS,
    Recommender,
)
from tests.unit.recommendation.conftest import CATALOG


def ids(items: list[tuple[str, float]]) -> list[str]:
    return [item for item, _ in items]


def test_a_known_customer_gets_their_own_ranking(recommender: Recommender) -> None:
    shoes = recommender.recommend("c-shoes", 3)
    assert shoes.strategy == PERSONALIZED
    assert shoes.model_version == 3
    assert ids(shoes.items) == ["boots", "sneakers", "parka"]
    assert [round(s, 3) for _, s in shoes.items] == [0.9, 0.8, 0.1]
    assert ids(recommender.recommend("c-coats", 2).items) == ["parka", "raincoat"]


def test_exclusions_leave_out_purchases_and_named_items(recommender: Recommender) -> None:
    answer = recommender.recommend("c-shoes", 3, exclude_purchased=True)
    assert ids(answer.items) == ["sneakers", "parka", "socks"]
    answer = recommender.recommend(
        "c-shoes", 3, exclude_purchased=True, exclude_items={"sneakers", "unknown-item"}
    )
    assert ids(answer.items) == ["parka", "socks", "raincoat"]


def test_a_category_restricts_the_ranking_case_insensitively(recommender: Recommender) -> None:
    answer = recommender.recommend("c-coats", 5, category=" SHOES ")
    assert answer.strategy == PERSONALIZED
    assert ids(answer.items) == ["boots", "sneakers"]
    assert recommender.recommend("c-coats", 5, category="garden").items == []


def test_n_larger_than_the_catalog_returns_every_item_once(recommender: Recommender) -> None:
    answer = recommender.recommend("c-shoes", 50)
    assert sorted(ids(answer.items)) == sorted(["boots", "sneakers", "parka", "raincoat", "socks"])


def test_an_unknown_customer_gets_popularity_overall_or_in_the_category(
    recommender: Recommender,
) -> None:
    answer = recommender.recommend("c-new", 3)
    assert answer.strategy == POPULAR
    assert answer.items == [("sneakers", 5.0), ("parka", 4.0), ("boots", 3.0)]
    answer = recommender.recommend("c-new", 3, category="outerwear", exclude_items={"parka"})
    assert answer.strategy == POPULAR_IN_CATEGORY
    assert ids(answer.items) == ["raincoat"]
    assert recommender.popular(2, "Shoes").items == [("sneakers", 5.0), ("boots", 3.0)]


def test_similar_items_by_cosine_and_popularity_for_an_unseen_item(
    recommender: Recommender,
) -> None:
    answer = recommender.similar_items("boots", 2)
    assert answer.strategy == SIMILAR_ITEMS
    assert ids(answer.items) == ["sneakers", "socks"]
    assert answer.items[0][1] < 1.0
    unseen = recommender.similar_items("hat", 2)  # catalog says accessories
    assert (unseen.strategy, ids(unseen.items)) == (POPULAR_IN_CATEGORY, ["socks"])
    unknown = recommender.similar_items("nothing-known", 1)
    assert (unknown.strategy, ids(unknown.items)) == (POPULAR, ["sneakers"])


def test_bought_together_counts_shared_orders(recommender: Recommender) -> None:
    answer = recommender.bought_together("boots", 5)
    assert answer.strategy == BOUGHT_TOGETHER
    assert answer.items == [("socks", 2.0), ("parka", 1.0)]
    never_ordered = recommender.bought_together("sneakers", 2)
    assert never_ordered.strategy == POPULAR_IN_CATEGORY
    assert ids(never_ordered.items) == ["boots"]  # the item itself is left out


def test_without_a_model_everything_is_an_empty_popularity_answer() -> None:
    empty = Recommender(None, CATALOG)
    for answer in (
        empty.recommend("c-shoes", 3),
        empty.similar_items("boots", 3),
        empty.bought_together("boots", 3),
        empty.popular(3),
    ):
        assert answer.items == []
        assert answer.model_version == 0
        assert answer.strategy in (POPULAR, POPULAR_IN_CATEGORY)


def test_items_are_shown_with_catalog_properties(recommender: Recommender) -> None:
    assert recommender.item("boots").image_url == "https://img/boots.png"
    assert recommender.item("mystery").item_id == "mystery"
    assert recommender.item("mystery").name == ""
