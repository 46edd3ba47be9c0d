"""Recommendations through the running platform: product events sent to the ingest API become
interactions, a model trained over gRPC serves the customer through GraphQL (without what
they ordered), and a customer the model has not seen gets popularity, saying so."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from infra.local.stack import Stack
from lodestar.v1 import recommendation_pb2, recommendation_pb2_grpc
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

RECOMMENDATIONS_QUERY = """
query($value: String!, $n: Int!) {
  customer(by: {identifier: {type: "user_id", value: $value}}) {
    id
    recommendations(n: $n) {
      strategy
      modelVersion
      items { itemId score name category price }
    }
  }
}
"""


async def recommendations(platform: Platform, user: str, n: int = 3) -> dict[str, Any] | None:
    body = (await platform.graphql(RECOMMENDATIONS_QUERY, {"value": user, "n": n})).json()
    assert "errors" not in body, body
    customer: dict[str, Any] | None = body["data"]["customer"]
    return None if customer is None else customer["recommendations"]


def shop_batch(tag: str) -> list[dict[str, Any]]:
    """Four shoe shoppers and four coat shoppers viewing and ordering their kind of product."""
    shoes = [f"{tag}-boots", f"{tag}-sneakers", f"{tag}-sandals"]
    coats = [f"{tag}-parka", f"{tag}-raincoat", f"{tag}-trench"]
    batch: list[dict[str, Any]] = []
    for n in range(8):
        user, items = f"u{tag}{n}", shoes if n < 4 else coats
        category = "shoes" if n < 4 else "outerwear"
        for k, item in enumerate(items):
            batch.append(
                {
                    "type": "track",
                    "userId": user,
                    "event": "Product Viewed",
                    "messageId": f"{tag}-{n}-v{k}",
                    "properties": {
                        "product_id": item,
                        "name": item.rsplit("-", 1)[1].title(),
                        "category": category,
                        "price": 50 + k,
                    },
                }
            )
        batch.append(
            {
                "type": "track",
                "userId": user,
                "event": "Order Completed",
                "messageId": f"{tag}-{n}-o",
                "properties": {
                    "order_id": f"{tag}-o{n}",
                    "revenue": 100,
                    "currency": "EUR",
                    "products": [{"product_id": items[n % 3]}, {"product_id": items[0]}],
                },
            }
        )
    batch.append({"type": "identify", "userId": f"new{tag}", "traits": {"plan": "free"}})
    return batch


async def test_a_trained_model_recommends_through_graphql(platform: Platform, stack: Stack) -> None:
    tag = unique("reco").replace("-", "")
    response = await platform.send("/v1/batch", {"batch": shop_batch(tag)})
    assert response.status_code == 200, response.text
    shopper, newcomer = f"u{tag}1", f"new{tag}"
    await platform.wait_for_count(shopper, "Order Completed", 1, timeout_s=60)
    await platform.wait_for_count(f"u{tag}7", "Order Completed", 1, timeout_s=60)

    async with stack.grpc_channel("recommendation") as channel:
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        found: dict[str, Any] = {}

        async def personalised() -> bool:
            # The recommendation consumer may still be storing the events: train until the
            # model knows the shopper.
            try:
                await stub.Train(recommendation_pb2.TrainRequest(), timeout=60)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                return False
            answer = await recommendations(platform, shopper)
            found.update(answer or {})
            return bool(answer and answer["strategy"] == "personalized")

        await eventually(personalised, 90, "a model that knows the shopper", 1.0)
        info = await stub.GetModelInfo(recommendation_pb2.GetModelInfoRequest())

    assert found["modelVersion"] == info.version >= 1
    assert info.algorithm == "als"
    assert info.customers >= 8
    items = found["items"]
    assert len(items) == 3
    ordered = {f"{tag}-boots", f"{tag}-sneakers"}  # shopper 1 ordered these
    assert not ordered & {i["itemId"] for i in items}
    ours = [i for i in items if i["itemId"].startswith(tag)]
    assert ours, items
    for item in ours:
        assert item["name"] in ("Sandals", "Parka", "Raincoat", "Trench")
        assert item["category"] in ("shoes", "outerwear")
        assert item["price"] in (50, 51, 52)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)

    cold = await recommendations(platform, newcomer, 5)
    assert cold is not None
    assert cold["strategy"] == "popular"
    assert cold["modelVersion"] == info.version
    assert len(cold["items"]) == 5

    body = (await platform.graphql(RECOMMENDATIONS_QUERY, {"value": shopper, "n": 500})).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "n must be between 1 and 100" in body["errors"][0]["message"]
