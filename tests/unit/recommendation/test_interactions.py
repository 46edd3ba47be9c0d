"""Which events become interactions, what they weigh, how they fade, and the product
properties they carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.recommendation.interactions import (
    ADDED,
    ORDERED,
    RATED,
    VIEWED,
    InteractionWeights,
    ItemProperties,
    interactions_of,
    product_id,
    products_of,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def test_default_weights_per_kind_and_ratings_by_their_value() -> None:
    weights = InteractionWeights()
    assert weights.base(VIEWED, 1) == 1
    assert weights.base(ADDED, 1) == 3
    assert weights.base(ORDERED, 1) == 5
    assert weights.base(RATED, 4) == 4
    assert InteractionWeights(rated=0.5).base(RATED, 4) == 2
    with pytest.raises(ValueError, match="unknown interaction kind"):
        weights.base("liked", 1)


def test_half_life_halves_the_weight_per_period_and_zero_turns_decay_off() -> None:
    weights = InteractionWeights(half_life_days=30)
    assert weights.weight(ORDERED, 1, NOW, NOW) == 5
    assert weights.weight(ORDERED, 1, NOW - timedelta(days=30), NOW) == pytest.approx(2.5)
    assert weights.weight(VIEWED, 1, NOW - timedelta(days=90), NOW) == pytest.approx(0.125)
    assert weights.weight(VIEWED, 1, NOW + timedelta(days=5), NOW) == 1  # clock skew: new
    assert InteractionWeights().weight(VIEWED, 1, NOW - timedelta(days=3_000), NOW) == 1


def test_weights_must_be_finite_and_not_negative() -> None:
    with pytest.raises(ValueError, match="viewed"):
        InteractionWeights(viewed=-1)
    with pytest.raises(ValueError, match="half_life_days"):
        InteractionWeights(half_life_days=float("inf"))


def test_a_view_and_an_add_are_one_interaction_each() -> None:
    viewed = interactions_of("e1", "c1", "Product Viewed", {"product_id": "sku-1"}, NOW)
    added = interactions_of("e2", "c1", "Product Added", {"sku": "sku-2"}, NOW)
    assert [(i.item_id, i.kind, i.value, i.key) for i in viewed] == [
        ("sku-1", VIEWED, 1.0, "e1:sku-1")
    ]
    assert [(i.item_id, i.kind) for i in added] == [("sku-2", ADDED)]


def test_an_order_makes_one_interaction_per_distinct_product() -> None:
    properties = {
        "order_id": "o-7",
        "products": [
            {"product_id": "a", "price": 3},
            {"product_id": "b"},
            {"product_id": "a", "quantity": 2},
            {"name": "no id"},
            "not a product",
        ],
    }
    found = interactions_of("e3", "c1", "Order Completed", properties, NOW)
    assert [(i.item_id, i.kind, i.order_id) for i in found] == [
        ("a", ORDERED, "o-7"),
        ("b", ORDERED, "o-7"),
    ]
    without_id = interactions_of("e4", "c1", "Order Completed", {"products": [{"id": 5}]}, NOW)
    assert [(i.item_id, i.order_id) for i in without_id] == [("5", "e4")]


def test_a_rating_weighs_its_value_and_a_bad_rating_is_no_interaction() -> None:
    rated = interactions_of("e5", "c1", "Product Rated", {"product_id": "m", "rating": 4.0}, NOW)
    assert [(i.kind, i.value) for i in rated] == [(RATED, 4.0)]
    for rating in (0, -1, "great", None, True):
        props = {"product_id": "m", "rating": rating}
        assert interactions_of("e6", "c1", "Product Rated", props, NOW) == []


def test_other_events_and_anonymous_events_are_no_interaction() -> None:
    assert interactions_of("e7", "c1", "Checkout Started", {"product_id": "x"}, NOW) == []
    assert interactions_of("e8", "", "Product Viewed", {"product_id": "x"}, NOW) == []
    assert interactions_of("e9", "c1", "Product Viewed", {"name": "no id"}, NOW) == []


def test_product_ids_from_numbers_and_strings() -> None:
    assert product_id({"product_id": 12.0}) == "12"
    assert product_id({"product_id": " 12 "}) == "12"
    assert product_id({"product_id": True, "sku": "s"}) == "s"
    assert product_id({"product_id": "x" * 201}) is None


def test_product_properties_come_from_the_event_or_the_order_lines() -> None:
    viewed = products_of(
        "Product Viewed",
        {
            "product_id": "p1",
            "name": " Boots ",
            "category": "shoes",
            "price": "129.5",
            "image_url": "https://img.example/p1.png",
        },
    )
    assert viewed == [ItemProperties("p1", "Boots", "shoes", 129.5, "https://img.example/p1.png")]
    ordered = products_of(
        "Order Completed", {"products": [{"product_id": "p2", "price": -3, "category": 7}]}
    )
    assert ordered == [ItemProperties("p2")]
    assert ItemProperties("p3", name="N", price=0.0).fields() == {"name": "N", "price": 0.0}


def test_every_rating_can_count_as_one_interaction() -> None:
    weights = InteractionWeights(rating_counts=False)
    assert weights.base(RATED, 4) == 1
    assert weights.base(RATED, 1) == 1
    assert InteractionWeights(rated=2, rating_counts=False).base(RATED, 5) == 2
    assert weights.as_dict()["rating_counts"] == 0
    assert InteractionWeights().as_dict()["rating_counts"] == 1
