"""GraphQL for recommendations: a customer's recommended products and the strategy that chose
them (their own model factors, or popularity while the model does not know them)."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from gateway.errors import BAD_USER_INPUT, client_error
from lodestar.v1 import recommendation_pb2

MAX_N = 100
_STRATEGY = {
    recommendation_pb2.RECOMMENDATION_STRATEGY_PERSONALIZED: "personalized",
    recommendation_pb2.RECOMMENDATION_STRATEGY_POPULAR: "popular",
    recommendation_pb2.RECOMMENDATION_STRATEGY_POPULAR_IN_CATEGORY: "popular_in_category",
    recommendation_pb2.RECOMMENDATION_STRATEGY_SIMILAR_ITEMS: "similar_items",
    recommendation_pb2.RECOMMENDATION_STRATEGY_BOUGHT_TOGETHER: "bought_together",
}


@strawberry.type(description="A recommended product, with what the catalog or events told.")
class RecommendedItem:
    item_id: strawberry.ID
    score: float = strawberry.field(description="Higher is better; compare within one list.")
    name: str | None
    category: str | None
    price: float | None
    image_url: str | None

    @staticmethod
    def of(item: recommendation_pb2.RecommendedItem) -> RecommendedItem:
        return RecommendedItem(
            item_id=strawberry.ID(item.item_id),
            score=item.score,
            name=item.name or None,
            category=item.category or None,
            price=item.price if item.HasField("price") else None,
            image_url=item.image_url or None,
        )


@strawberry.type(description="Products recommended to a customer and how they were chosen.")
class Recommendations:
    strategy: str = strawberry.field(
        description="personalized (the customer's model factors), or popular while the model "
        "does not know the customer yet"
    )
    model_version: int = strawberry.field(description="0 before the first model is trained.")
    items: list[RecommendedItem]


def check_n(n: int) -> int:
    """How many items to ask for, refused with a clear error outside 1..MAX_N."""
    if not 1 <= n <= MAX_N:
        raise client_error(f"n must be between 1 and {MAX_N}", BAD_USER_INPUT)
    return n


async def customer_recommendations(info: Info, customer_id: str, n: int) -> Recommendations:
    """Up to ``n`` products the customer has not ordered yet (batched across the query)."""
    check_n(n)
    found = await info.context["loaders"].recommendations.load((customer_id, n))
    return Recommendations(
        strategy=_STRATEGY.get(found.strategy, "unknown"),
        model_version=found.model_version,
        items=[RecommendedItem.of(i) for i in found.items],
    )
