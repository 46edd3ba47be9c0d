"""The servicer called directly: responses carry strategy, version and item properties; bad
input is InvalidArgument naming the field."""

from __future__ import annotations

from typing import Any, cast

import pytest

from lodestar.v1 import recommendation_pb2 as pb
from services.platform.errors import InvalidArgument
from services.recommendation.api import RecommendationServicer
from services.recommendation.recommender import Recommender
from services.recommendation.serving import Recommendations
from services.recommendation.store import RecommendationStore
from services.recommendation.trainer import Trainer
from tests.unit.recommendation.conftest import CATALOG, shop_model

CONTEXT = cast(Any, None)


@pytest.fixture
def servicer() -> RecommendationServicer:
    serving = Recommendations(cast(RecommendationStore, None))
    serving.recommender = Recommender(shop_model(), CATALOG)
    return RecommendationServicer(serving, cast(Trainer, None), cast(RecommendationStore, None))


async def test_recommend_answers_with_items_strategy_and_version(
    servicer: RecommendationServicer,
) -> None:
    reply = await servicer.Recommend(pb.RecommendRequest(customer_id="c-shoes", n=1), CONTEXT)
    assert reply.strategy == pb.RECOMMENDATION_STRATEGY_PERSONALIZED
    assert reply.model_version == 3
    [item] = reply.items
    assert (item.item_id, item.name, item.category, item.price) == (
        "boots",
        "Trail boots",
        "Shoes",
        129.0,
    )
    assert item.image_url == "https://img/boots.png"
    cold = await servicer.Recommend(pb.RecommendRequest(customer_id="someone-new"), CONTEXT)
    assert cold.strategy == pb.RECOMMENDATION_STRATEGY_POPULAR
    assert len(cold.items) == 5  # n=0 means 10: every item with popularity
    raincoat = (await servicer.Popular(pb.PopularRequest(n=5, category="outerwear"), CONTEXT)).items
    assert not raincoat[-1].HasField("price")


async def test_batch_recommend_answers_in_request_order(servicer: RecommendationServicer) -> None:
    reply = await servicer.BatchRecommend(
        pb.BatchRecommendRequest(
            requests=[
                pb.RecommendRequest(customer_id="c-coats", n=1),
                pb.RecommendRequest(customer_id="new", n=1, category="accessories"),
                pb.RecommendRequest(customer_id="c-shoes", n=1, exclude_purchased=True),
            ]
        ),
        CONTEXT,
    )
    assert [(r.strategy, r.items[0].item_id) for r in reply.responses] == [
        (pb.RECOMMENDATION_STRATEGY_PERSONALIZED, "parka"),
        (pb.RECOMMENDATION_STRATEGY_POPULAR_IN_CATEGORY, "socks"),
        (pb.RECOMMENDATION_STRATEGY_PERSONALIZED, "sneakers"),
    ]


async def test_item_rpcs_say_which_strategy_answered(servicer: RecommendationServicer) -> None:
    similar = await servicer.SimilarItems(pb.SimilarItemsRequest(item_id="boots", n=1), CONTEXT)
    assert (similar.strategy, similar.items[0].item_id) == (
        pb.RECOMMENDATION_STRATEGY_SIMILAR_ITEMS,
        "sneakers",
    )
    together = await servicer.FrequentlyBoughtTogether(
        pb.FrequentlyBoughtTogetherRequest(item_id="boots", n=2), CONTEXT
    )
    assert together.strategy == pb.RECOMMENDATION_STRATEGY_BOUGHT_TOGETHER
    assert [i.item_id for i in together.items] == ["socks", "parka"]
    info = await servicer.GetModelInfo(pb.GetModelInfoRequest(), CONTEXT)
    assert (info.version, info.algorithm, info.customers, info.items) == (3, "als", 2, 5)


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("Recommend", pb.RecommendRequest(n=3), "customer_id is required"),
        ("Recommend", pb.RecommendRequest(customer_id="c", n=101), "n must be between 1 and 100"),
        ("Recommend", pb.RecommendRequest(customer_id="c", n=-1), "n must be between"),
        (
            "Recommend",
            pb.RecommendRequest(customer_id="c", exclude_items=["x"] * 1_001),
            "exclude_items",
        ),
        (
            "BatchRecommend",
            pb.BatchRecommendRequest(
                requests=[pb.RecommendRequest(customer_id="c"), pb.RecommendRequest(n=500)]
            ),
            "requests[1].customer_id is required",
        ),
        (
            "BatchRecommend",
            pb.BatchRecommendRequest(requests=[pb.RecommendRequest(customer_id="c")] * 1_001),
            "requests: at most 1000",
        ),
        ("SimilarItems", pb.SimilarItemsRequest(item_id=" "), "item_id is required"),
        ("SimilarItems", pb.SimilarItemsRequest(item_id="x" * 201), "item_id is longer"),
        ("FrequentlyBoughtTogether", pb.FrequentlyBoughtTogetherRequest(n=3), "item_id"),
        ("Popular", pb.PopularRequest(n=1_000), "n must be between"),
        ("ImportCatalog", pb.ImportCatalogRequest(), "items: at least one"),
        (
            "ImportCatalog",
            pb.ImportCatalogRequest(items=[pb.CatalogItem(item_id="a"), pb.CatalogItem(name="x")]),
            "items[1].item_id is required",
        ),
        (
            "ImportCatalog",
            pb.ImportCatalogRequest(items=[pb.CatalogItem(item_id="a", price=-1)]),
            "items[0].price must be a number >= 0",
        ),
        (
            "ImportCatalog",
            pb.ImportCatalogRequest(items=[pb.CatalogItem(item_id="a", image_url="ftp://x")]),
            "items[0].image_url must be an http(s) URL",
        ),
    ],
)
async def test_bad_input_names_the_field(
    servicer: RecommendationServicer, call: str, request_: Any, field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await getattr(servicer, call)(request_, CONTEXT)
    assert field in str(error.value)
