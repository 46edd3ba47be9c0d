"""The recommendation gRPC servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc

from lodestar.v1 import recommendation_pb2, recommendation_pb2_grpc
from services.platform.errors import InvalidArgument
from services.platform.timestamps import timestamp
from services.recommendation.catalog import checked_item
from services.recommendation.interactions import MAX_ITEM_ID, ItemProperties
from services.recommendation.model import ModelInfo
from services.recommendation.recommender import (
    BOUGHT_TOGETHER,
    PERSONALIZED,
    POPULAR,
    POPULAR_IN_CATEGORY,
    SIMILAR_ITEMS,
    Answer,
    Recommender,
)
from services.recommendation.serving import Recommendations
from services.recommendation.store import RecommendationStore
from services.recommendation.trainer import NothingToTrain, Trainer

DEFAULT_N = 10
MAX_N = 100
MAX_BATCH = 1_000
MAX_EXCLUDED = 1_000
MAX_CATALOG_ITEMS = 10_000
_STRATEGIES = {
    PERSONALIZED: recommendation_pb2.RECOMMENDATION_STRATEGY_PERSONALIZED,
    POPULAR: recommendation_pb2.RECOMMENDATION_STRATEGY_POPULAR,
    POPULAR_IN_CATEGORY: recommendation_pb2.RECOMMENDATION_STRATEGY_POPULAR_IN_CATEGORY,
    SIMILAR_ITEMS: recommendation_pb2.RECOMMENDATION_STRATEGY_SIMILAR_ITEMS,
    BOUGHT_TOGETHER: recommendation_pb2.RECOMMENDATION_STRATEGY_BOUGHT_TOGETHER,
}
Context = grpc.aio.ServicerContext[Any, Any]


def _count(n: int, field: str = "n") -> int:
    if n == 0:
        return DEFAULT_N
    if not 1 <= n <= MAX_N:
        raise InvalidArgument(f"{field} must be between 1 and {MAX_N} (0 means {DEFAULT_N})")
    return n


def _identifier(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(f"{field} is required")
    if len(value) > MAX_ITEM_ID:
        raise InvalidArgument(f"{field} is longer than {MAX_ITEM_ID} characters")
    return value


def _response(recommender: Recommender, answer: Answer) -> recommendation_pb2.RecommendResponse:
    items = []
    for item_id, score in answer.items:
        shown = recommender.item(item_id)
        items.append(
            recommendation_pb2.RecommendedItem(
                item_id=item_id,
                score=score,
                name=shown.name,
                category=shown.category,
                price=shown.price,
                image_url=shown.image_url,
            )
        )
    return recommendation_pb2.RecommendResponse(
        items=items, strategy=_STRATEGIES[answer.strategy], model_version=answer.model_version
    )


def _catalog_item(item: ItemProperties) -> recommendation_pb2.CatalogItem:
    found = recommendation_pb2.CatalogItem(
        item_id=item.item_id, name=item.name, category=item.category, image_url=item.image_url
    )
    if item.price is not None:
        found.price = item.price
    return found


def model_info(
    info: ModelInfo | None, customers: int = 0, items: int = 0
) -> recommendation_pb2.ModelInfo:
    """The proto form of a model's metadata (version 0 for none)."""
    if info is None:
        return recommendation_pb2.ModelInfo()
    return recommendation_pb2.ModelInfo(
        version=info.version,
        algorithm=info.algorithm,
        trained_at=timestamp(info.trained_at),
        data_from=timestamp(info.data_from),
        data_to=timestamp(info.data_to),
        customers=customers,
        items=items,
        interactions=info.interactions,
        metrics=info.metrics,
        parameters_json=json.dumps(info.parameters, sort_keys=True),
        revision=info.revision,
    )


class RecommendationServicer(recommendation_pb2_grpc.RecommendationServiceServicer):
    """Recommendations, similar items, popularity, training and the catalog over gRPC."""

    def __init__(
        self, serving: Recommendations, trainer: Trainer, store: RecommendationStore
    ) -> None:
        self.serving = serving
        self.trainer = trainer
        self.store = store

    def _recommend(
        self, recommender: Recommender, request: recommendation_pb2.RecommendRequest, where: str
    ) -> recommendation_pb2.RecommendResponse:
        customer_id = _identifier(request.customer_id, f"{where}customer_id")
        n = _count(request.n, f"{where}n")
        if len(request.exclude_items) > MAX_EXCLUDED:
            raise InvalidArgument(f"{where}exclude_items: at most {MAX_EXCLUDED}")
        answer = recommender.recommend(
            customer_id,
            n,
            exclude_purchased=request.exclude_purchased,
            exclude_items=set(request.exclude_items),
            category=request.category,
        )
        return _response(recommender, answer)

    async def Recommend(
        self, request: recommendation_pb2.RecommendRequest, context: Context
    ) -> recommendation_pb2.RecommendResponse:
        """Items for one customer; popularity for a customer the model has not seen."""
        return self._recommend(self.serving.recommender, request, "")

    async def BatchRecommend(
        self, request: recommendation_pb2.BatchRecommendRequest, context: Context
    ) -> recommendation_pb2.BatchRecommendResponse:
        """Many Recommend calls answered by one model snapshot, in request order."""
        if len(request.requests) > MAX_BATCH:
            raise InvalidArgument(f"requests: at most {MAX_BATCH} per call")
        recommender = self.serving.recommender
        return recommendation_pb2.BatchRecommendResponse(
            responses=[
                self._recommend(recommender, r, f"requests[{i}].")
                for i, r in enumerate(request.requests)
            ]
        )

    async def SimilarItems(
        self, request: recommendation_pb2.SimilarItemsRequest, context: Context
    ) -> recommendation_pb2.RecommendResponse:
        """Items closest to the given one; popularity in its category for an unseen item."""
        item_id = _identifier(request.item_id, "item_id")
        recommender = self.serving.recommender
        return _response(recommender, recommender.similar_items(item_id, _count(request.n)))

    async def FrequentlyBoughtTogether(
        self, request: recommendation_pb2.FrequentlyBoughtTogetherRequest, context: Context
    ) -> recommendation_pb2.RecommendResponse:
        """Items most often in the same order as the given one."""
        item_id = _identifier(request.item_id, "item_id")
        recommender = self.serving.recommender
        return _response(recommender, recommender.bought_together(item_id, _count(request.n)))

    async def Popular(
        self, request: recommendation_pb2.PopularRequest, context: Context
    ) -> recommendation_pb2.RecommendResponse:
        """The most popular items, overall or in a category."""
        recommender = self.serving.recommender
        return _response(recommender, recommender.popular(_count(request.n), request.category))

    async def Train(
        self, request: recommendation_pb2.TrainRequest, context: Context
    ) -> recommendation_pb2.ModelInfo:
        """Train, store and serve a new model version now."""
        try:
            await self.trainer.train()
        except NothingToTrain as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return self._served_info()

    async def GetModelInfo(
        self, request: recommendation_pb2.GetModelInfoRequest, context: Context
    ) -> recommendation_pb2.ModelInfo:
        """What this replica serves."""
        return self._served_info()

    def _served_info(self) -> recommendation_pb2.ModelInfo:
        model = self.serving.model
        if model is None:
            return model_info(None)
        return model_info(model.info, len(model.customer_ids), len(model.item_ids))

    async def GetItems(
        self, request: recommendation_pb2.GetItemsRequest, context: Context
    ) -> recommendation_pb2.GetItemsResponse:
        """Catalog items by id, from the catalog this replica serves; unknown ids left out."""
        if len(request.item_ids) > MAX_BATCH:
            raise InvalidArgument(f"item_ids: at most {MAX_BATCH} per call")
        for position, item_id in enumerate(request.item_ids):
            _identifier(item_id, f"item_ids[{position}]")
        catalog = self.serving.catalog
        return recommendation_pb2.GetItemsResponse(
            items={
                item_id: _catalog_item(catalog[item_id])
                for item_id in request.item_ids
                if item_id in catalog
            }
        )

    async def ImportCatalog(
        self, request: recommendation_pb2.ImportCatalogRequest, context: Context
    ) -> recommendation_pb2.ImportCatalogResponse:
        """Validate every item, then store them all (nothing is stored if one is bad)."""
        if len(request.items) > MAX_CATALOG_ITEMS:
            raise InvalidArgument(f"items: at most {MAX_CATALOG_ITEMS} per call")
        if not request.items:
            raise InvalidArgument("items: at least one item is required")
        items = [
            checked_item(
                ItemProperties(
                    item_id=i.item_id,
                    name=i.name,
                    category=i.category,
                    price=i.price if i.HasField("price") else None,
                    image_url=i.image_url,
                ),
                f"items[{n}]",
            )
            for n, i in enumerate(request.items)
        ]
        imported = await self.store.import_catalog(items, datetime.now(UTC))
        await self.serving.refresh()
        return recommendation_pb2.ImportCatalogResponse(imported=imported)
