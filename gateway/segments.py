"""GraphQL for audiences: the segment list, a customer's segments and predictive scores."""

from __future__ import annotations

import json
from datetime import datetime
from typing import cast

import grpc
import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.errors import from_rpc_error
from lodestar.v1 import segmentation_pb2
from services.platform.timestamps import field_time

_STATUS = {
    segmentation_pb2.SEGMENT_STATUS_BACKFILLING: "backfilling",
    segmentation_pb2.SEGMENT_STATUS_LIVE: "live",
}


@strawberry.type(description="An audience defined by a rule over profiles and events.")
class Segment:
    id: strawberry.ID
    name: str
    description: str
    version: int
    status: str = strawberry.field(description="backfilling or live")
    rule: JSON
    size: int
    created_at: datetime | None
    updated_at: datetime | None
    backfill_evaluated: int
    backfill_total: int

    @staticmethod
    def of(s: segmentation_pb2.Segment) -> Segment:
        return Segment(
            id=strawberry.ID(s.id),
            name=s.name,
            description=s.description,
            version=s.version,
            status=_STATUS.get(s.status, "unknown"),
            rule=cast(JSON, json.loads(s.rule_json)),
            size=s.size,
            created_at=field_time(s, "created_at"),
            updated_at=field_time(s, "updated_at"),
            backfill_evaluated=s.backfill_evaluated,
            backfill_total=s.backfill_total,
        )


@strawberry.type(description="A segment the customer is in, and since when.")
class SegmentMembership:
    segment_id: strawberry.ID
    segment_name: str
    since: datetime | None
    segment_version: int


@strawberry.type(description="Predictive scores: RFM, churn risk (p_alive), lifetime value.")
class CustomerScores:
    recency_days: int
    frequency: int
    monetary: float
    r_score: int
    f_score: int
    m_score: int
    rfm_cell: str
    p_alive: float | None = strawberry.field(
        description="Probability the customer is still active; null until enough customers "
        "bought twice to fit the purchase models."
    )
    expected_purchases_30d: float | None
    expected_purchases_90d: float | None
    clv_12m: float | None = strawberry.field(
        description="Discounted value of the next 12 months (base currency)."
    )
    model_version: str
    computed_at: datetime | None

    @staticmethod
    def of(s: segmentation_pb2.CustomerScores) -> CustomerScores:
        return CustomerScores(
            recency_days=s.recency_days,
            frequency=s.frequency,
            monetary=s.monetary,
            r_score=s.r_score,
            f_score=s.f_score,
            m_score=s.m_score,
            rfm_cell=s.rfm_cell,
            p_alive=s.p_alive if s.HasField("p_alive") else None,
            expected_purchases_30d=(
                s.expected_purchases_30d if s.HasField("expected_purchases_30d") else None
            ),
            expected_purchases_90d=(
                s.expected_purchases_90d if s.HasField("expected_purchases_90d") else None
            ),
            clv_12m=s.clv_12m if s.HasField("clv_12m") else None,
            model_version=s.model_version,
            computed_at=field_time(s, "computed_at"),
        )


async def segments(info: Info) -> list[Segment]:
    """Every segment with its size and status."""
    try:
        reply = await info.context["clients"].segmentation.ListSegments(
            segmentation_pb2.ListSegmentsRequest()
        )
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from error
    return [Segment.of(s) for s in reply.segments]


async def segment(info: Info, id: strawberry.ID) -> Segment | None:
    """A segment by id; null when unknown."""
    try:
        found = await info.context["clients"].segmentation.GetSegment(
            segmentation_pb2.GetSegmentRequest(id=str(id))
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise from_rpc_error(error) from error
    return Segment.of(found)


async def customer_segments(info: Info, customer_id: str) -> list[SegmentMembership]:
    """The segments one customer is in (batched across the query)."""
    found = await info.context["loaders"].memberships.load(customer_id)
    return [
        SegmentMembership(
            segment_id=strawberry.ID(m.segment_id),
            segment_name=m.segment_name,
            since=field_time(m, "since"),
            segment_version=m.segment_version,
        )
        for m in found.segments
    ]


async def customer_scores(info: Info, customer_id: str) -> CustomerScores | None:
    """One customer's scores (batched across the query); null before the first scoring."""
    found = await info.context["loaders"].scores.load(customer_id)
    return None if found is None else CustomerScores.of(found)
