"""GraphQL for catalog items: ``item(id:)`` with the recommendation service's catalog data,
its similar items and what is bought together with it."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import strawberry
from strawberry.types import Info

from gateway.errors import from_rpc_error
from gateway.recommendations import RecommendedItem, check_n
from lodestar.v1 import recommendation_pb2


@strawberry.type(description="A product of the catalog (or seen in events).")
class Item:
    id: strawberry.ID
    name: str | None
    category: str | None
    price: float | None
    image_url: str | None

    @strawberry.field(
        description="Up to n (1..100) items closest to this one; popular items of its "
        "category while the model does not know it."
    )
    async def similar_items(self, info: Info, n: int = 10) -> list[RecommendedItem] | None:
        request = recommendation_pb2.SimilarItemsRequest(item_id=str(self.id), n=check_n(n))
        return await _items(info.context["clients"].recommendation.SimilarItems(request))

    @strawberry.field(description="Up to n (1..100) items most often in its orders.")
    async def frequently_bought_together(
        self, info: Info, n: int = 10
    ) -> list[RecommendedItem] | None:
        request = recommendation_pb2.FrequentlyBoughtTogetherRequest(
            item_id=str(self.id), n=check_n(n)
        )
        return await _items(
            info.context["clients"].recommendation.FrequentlyBoughtTogether(request)
        )


async def _items(call: Awaitable[recommendation_pb2.RecommendResponse]) -> list[RecommendedItem]:
    try:
        found = await call
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from error
    return [RecommendedItem.of(i) for i in found.items]


async def item(info: Info, id: strawberry.ID) -> Item | None:
    """A catalog item by id (batched across the query); null when unknown."""
    found = await info.context["loaders"].items.load(str(id))
    if found is None:
        return None
    return Item(
        id=strawberry.ID(found.item_id),
        name=found.name or None,
        category=found.category or None,
        price=found.price if found.HasField("price") else None,
        image_url=found.image_url or None,
    )
