"""Audiences through the running platform: a segment created over gRPC fills by backfill and
in real time from events sent to the ingest API; GraphQL shows the segment list and each
customer's segments and scores; membership events reach Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.local.stack import Stack
from lodestar.v1 import events_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.platform import topics
from tests.support.kafka import eventually, read_all, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

SEGMENTS_QUERY = """
query($value: String!) {
  segments { id name status size }
  customer(by: {identifier: {type: "user_id", value: $value}}) {
    id
    segments { segmentId segmentName since }
    scores { frequency rfmCell rScore pAlive modelVersion }
  }
}
"""


async def view(platform: Platform, user: str) -> dict[str, Any]:
    body = (await platform.graphql(SEGMENTS_QUERY, {"value": user})).json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def test_segments_fill_in_real_time_and_show_in_graphql(
    platform: Platform, stack: Stack
) -> None:
    tag = unique("aud").replace("-", "")
    user, other = f"u{tag}", f"v{tag}"
    gold_id, abandoned_id = f"gold-{tag}", f"abandoned-{tag}"
    async with stack.grpc_channel("segmentation") as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        gold = {"field": "loyalty.tier", "op": "in", "value": ["Gold", "Platinum"]}
        abandoned = {
            "event": "Checkout Started",
            "where": [{"field": "cart_id", "op": "eq", "value": tag}],
            "within_last_days": 30,
            "not_followed_by": {"event": "Order Completed", "within_hours": 48},
        }
        for segment_id, rule in ((gold_id, gold), (abandoned_id, abandoned)):
            await stub.CreateSegment(
                segmentation_pb2.CreateSegmentRequest(
                    id=segment_id, name=segment_id.title(), rule_json=json.dumps(rule)
                )
            )

        started = (datetime.now(UTC) - timedelta(days=3)).isoformat()
        batch = [
            {"type": "identify", "userId": user, "traits": {"plan": "pro"}},
            {
                "type": "track",
                "userId": user,
                "event": "Order Completed",
                "messageId": f"{tag}-o1",
                "properties": {"order_id": f"{tag}-o1", "total": 1_600, "currency": "EUR"},
            },
            {
                "type": "track",
                "userId": other,
                "event": "Checkout Started",
                "messageId": f"{tag}-c1",
                "timestamp": started,
                "properties": {"cart_id": tag},
            },
        ]
        response = await platform.send("/v1/batch", {"batch": batch})
        assert response.status_code == 200, response.text

        async def in_gold() -> bool:
            found = (await view(platform, user))["customer"]
            return bool(found and [s["segmentId"] for s in found["segments"]] == [gold_id])

        await eventually(in_gold, 90, "the buyer entering the gold segment")

        async def abandoned_member() -> bool:
            found = (await view(platform, other))["customer"]
            return bool(found and [s["segmentId"] for s in found["segments"]] == [abandoned_id])

        await eventually(abandoned_member, 90, "the abandoned checkout audience")
        listed = {s["id"]: s for s in (await view(platform, user))["segments"]}
        assert listed[gold_id]["status"] == "live"
        assert listed[gold_id]["size"] >= 1

        run = await stub.RecomputeScores(segmentation_pb2.RecomputeScoresRequest())
        assert run.customers_scored >= 1
        scores = (await view(platform, user))["customer"]["scores"]
        assert scores["frequency"] == 1
        assert scores["rfmCell"]
        assert 1 <= scores["rScore"] <= 5
        assert scores["modelVersion"] == run.model_version

        deleted = await stub.DeleteSegment(segmentation_pb2.DeleteSegmentRequest(id=gold_id))
        assert deleted.members_exited >= 1

    customer_id = (await view(platform, user))["customer"]["id"]
    records = await read_all(stack.kafka_bootstrap, topics.SEGMENTS_MEMBERSHIP)
    changes = [events_pb2.SegmentMembershipChanged.FromString(r.value) for r in records]
    mine = [(c.segment_id, c.change) for c in changes if c.customer_id == customer_id]
    assert mine == [
        (gold_id, events_pb2.MEMBERSHIP_CHANGE_ENTERED),
        (gold_id, events_pb2.MEMBERSHIP_CHANGE_EXITED),
    ]
