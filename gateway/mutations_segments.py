"""Mutations that define audiences: create, change and delete segments, and rescore every
customer now. Each needs ``write:segments``. A rule the service refuses comes back as
BAD_USER_INPUT with ``extensions.path``, the JSON path of the bad part of the rule."""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.mutation_errors import call, input_error, long_call_timeout
from gateway.scopes import Scope, needs
from gateway.segments import Segment
from lodestar.v1 import segmentation_pb2
from services.platform.timestamps import field_time

_WRITE_SEGMENTS = [needs(Scope.WRITE_SEGMENTS)]
_RULE = (
    'The rule, e.g. {"all": [{"field": "traits.plan", "op": "eq", "value": "pro"}, '
    '{"event": "Order Completed", "within_last_days": 30}]}'
)


def _rule_json(rule: Any) -> str:
    """The rule as the service reads it; JSON numbers that are not numbers are refused."""
    try:
        return json.dumps(rule, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        raise input_error("rule: NaN and Infinity are not JSON numbers", "$") from None


@strawberry.type(description="A segment deleted and how many members it had.")
class SegmentDeleted:
    id: strawberry.ID
    members_exited: int


@strawberry.type(description="A scoring run: every customer rescored with freshly fit models.")
class ScoringRun:
    model_version: str
    customers_scored: int
    parameters: JSON = strawberry.field(description="The fitted model parameters.")
    computed_at: datetime | None


@strawberry.type
class SegmentMutation:
    @strawberry.field(
        description="Define a segment; it backfills over existing customers, then stays live. "
        "Needs write:segments.",
        permission_classes=_WRITE_SEGMENTS,
    )
    async def create_segment(
        self,
        info: Info,
        *,
        name: str,
        rule: Annotated[JSON, strawberry.argument(description=_RULE)],
        id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Default: made from the name.")
        ] = None,
        description: str = "",
    ) -> Segment:
        rule_json = _rule_json(rule)
        created = await call(
            info.context["clients"].segmentation.CreateSegment,
            lambda: segmentation_pb2.CreateSegmentRequest(
                id=str(id or ""), name=name, description=description, rule_json=rule_json
            ),
        )
        return Segment.of(created)

    @strawberry.field(
        description="Change a segment's name, description or rule (a new rule backfills "
        "again and bumps the version). Needs write:segments.",
        permission_classes=_WRITE_SEGMENTS,
    )
    async def update_segment(
        self,
        info: Info,
        *,
        id: strawberry.ID,
        name: str | None = None,
        description: str | None = None,
        rule: Annotated[JSON | None, strawberry.argument(description=_RULE)] = None,
    ) -> Segment:
        rule_json = "" if rule is None else _rule_json(rule)
        updated = await call(
            info.context["clients"].segmentation.UpdateSegment,
            lambda: segmentation_pb2.UpdateSegmentRequest(
                id=str(id), name=name or "", description=description or "", rule_json=rule_json
            ),
        )
        return Segment.of(updated)

    @strawberry.field(
        description="Delete a segment; every member exits it. Needs write:segments.",
        permission_classes=_WRITE_SEGMENTS,
    )
    async def delete_segment(self, info: Info, id: strawberry.ID) -> SegmentDeleted:
        deleted = await call(
            info.context["clients"].segmentation.DeleteSegment,
            lambda: segmentation_pb2.DeleteSegmentRequest(id=str(id)),
        )
        return SegmentDeleted(id=strawberry.ID(deleted.id), members_exited=deleted.members_exited)

    @strawberry.field(
        description="Refit the purchase models and rescore every customer now (RFM, churn "
        "risk, lifetime value). Needs write:segments.",
        permission_classes=_WRITE_SEGMENTS,
    )
    async def recompute_scores(self, info: Info) -> ScoringRun:
        recompute = info.context["clients"].segmentation.RecomputeScores
        timeout = long_call_timeout(info)
        rpc = recompute if timeout is None else partial(recompute, timeout=timeout)
        run = await call(rpc, segmentation_pb2.RecomputeScoresRequest)
        return ScoringRun(
            model_version=run.model_version,
            customers_scored=run.customers_scored,
            parameters=cast(JSON, json.loads(run.parameters_json or "{}")),
            computed_at=field_time(run, "computed_at"),
        )
