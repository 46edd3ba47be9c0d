"""The segmentation gRPC servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import base64
from typing import Any

import grpc

from lodestar.v1 import segmentation_pb2, segmentation_pb2_grpc
from services.platform.errors import InvalidArgument
from services.platform.timestamps import timestamp
from services.platform.validation import check_id, check_ids
from services.segmentation.definitions import SegmentDefinitions
from services.segmentation.records import StoredScores, StoredSegment
from services.segmentation.scoring import Scoring
from services.segmentation.segments import BACKFILLING, LIVE
from services.segmentation.store import SegmentationStore

MAX_BATCH = 1_000
MAX_PAGE = 1_000
DEFAULT_PAGE = 100
# Segment ids are at most 63 characters (see segments.check_segment_id); a token holds a
# customer id (at most 512) base64-encoded.
MAX_SEGMENT_ID_LENGTH = 64
MAX_TOKEN_LENGTH = 1_024
_STATUS = {
    BACKFILLING: segmentation_pb2.SEGMENT_STATUS_BACKFILLING,
    LIVE: segmentation_pb2.SEGMENT_STATUS_LIVE,
}
Context = grpc.aio.ServicerContext[Any, Any]


class SegmentationServicer(segmentation_pb2_grpc.SegmentationServiceServicer):
    """Segments, members and scores over gRPC."""

    def __init__(
        self, definitions: SegmentDefinitions, store: SegmentationStore, scoring: Scoring
    ) -> None:
        self.definitions = definitions
        self.store = store
        self.scoring = scoring

    async def _segment(self, doc: StoredSegment) -> segmentation_pb2.Segment:
        parsed = self.definitions.parsed(doc)
        return segmentation_pb2.Segment(
            id=doc["_id"],
            name=doc["name"],
            description=doc.get("description", ""),
            version=int(doc["version"]),
            status=_STATUS[doc["status"]],
            rule_json=doc["rule"],
            size=await self.store.count_members(doc["_id"]),
            created_at=timestamp(doc.get("created_at")),
            updated_at=timestamp(doc.get("updated_at")),
            backfill_evaluated=int(doc.get("backfill_evaluated", 0)),
            backfill_total=int(doc.get("backfill_total", 0)),
            reads_paths=sorted(parsed.rule.paths),
            reads_events=sorted(parsed.rule.event_names),
            time_dependent=parsed.rule.time_dependent,
        )

    async def CreateSegment(
        self, request: segmentation_pb2.CreateSegmentRequest, context: Context
    ) -> segmentation_pb2.Segment:
        """Validate, store, start the backfill."""
        check_id("id", request.id, required=False, limit=MAX_SEGMENT_ID_LENGTH)
        doc = await self.definitions.create(
            request.id, request.name, request.description, request.rule_json
        )
        return await self._segment(doc)

    async def UpdateSegment(
        self, request: segmentation_pb2.UpdateSegmentRequest, context: Context
    ) -> segmentation_pb2.Segment:
        """Change what was given; a new rule backfills again."""
        check_id("id", request.id, limit=MAX_SEGMENT_ID_LENGTH)
        doc = await self.definitions.update(
            request.id, request.name, request.description, request.rule_json
        )
        return await self._segment(doc)

    async def DeleteSegment(
        self, request: segmentation_pb2.DeleteSegmentRequest, context: Context
    ) -> segmentation_pb2.DeleteSegmentResponse:
        """Every member exits, then the segment is gone."""
        check_id("id", request.id, limit=MAX_SEGMENT_ID_LENGTH)
        exited = await self.definitions.delete(request.id)
        return segmentation_pb2.DeleteSegmentResponse(id=request.id, members_exited=exited)

    async def GetSegment(
        self, request: segmentation_pb2.GetSegmentRequest, context: Context
    ) -> segmentation_pb2.Segment:
        """One segment with its size and backfill progress."""
        check_id("id", request.id, limit=MAX_SEGMENT_ID_LENGTH)
        return await self._segment(await self.definitions.get(request.id))

    async def ListSegments(
        self, request: segmentation_pb2.ListSegmentsRequest, context: Context
    ) -> segmentation_pb2.ListSegmentsResponse:
        """Every segment, by id."""
        docs = await self.store.list_segments()
        return segmentation_pb2.ListSegmentsResponse(
            segments=[await self._segment(d) for d in docs]
        )

    async def Members(
        self, request: segmentation_pb2.MembersRequest, context: Context
    ) -> segmentation_pb2.MembersResponse:
        """A page of members in customer id order."""
        check_id("segment_id", request.segment_id, limit=MAX_SEGMENT_ID_LENGTH)
        await self.definitions.get(request.segment_id)
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE}")
        size = request.page_size or DEFAULT_PAGE
        after = _read_token(request.page_token)
        docs = await self.store.members_page(request.segment_id, after, size + 1)
        token = _write_token(docs[size - 1]["customer_id"]) if len(docs) > size else ""
        return segmentation_pb2.MembersResponse(
            members=[
                segmentation_pb2.Member(
                    customer_id=d["customer_id"],
                    since=timestamp(d.get("since")),
                    segment_version=int(d.get("segment_version", 1)),
                    cursor=_write_token(d["customer_id"]),
                )
                for d in docs[:size]
            ],
            next_page_token=token,
            total=await self.store.count_members(request.segment_id),
        )

    async def MembershipsFor(
        self, request: segmentation_pb2.MembershipsForRequest, context: Context
    ) -> segmentation_pb2.MembershipsForResponse:
        """The segments of each customer asked for."""
        ids = check_ids("customer_ids", request.customer_ids, most=MAX_BATCH)
        found = await self.store.memberships_of(ids)
        names = self.definitions.segment_names()
        return segmentation_pb2.MembershipsForResponse(
            memberships={
                c: segmentation_pb2.Memberships(
                    segments=[
                        segmentation_pb2.SegmentMembership(
                            segment_id=s,
                            segment_name=names.get(s, s),
                            since=timestamp(doc.get("since")),
                            segment_version=int(doc.get("segment_version", 1)),
                        )
                        for s, doc in sorted(found.get(c, {}).items())
                    ]
                )
                for c in ids
            }
        )

    async def GetScores(
        self, request: segmentation_pb2.GetScoresRequest, context: Context
    ) -> segmentation_pb2.GetScoresResponse:
        """The stored scores of the customers asked for."""
        ids = check_ids("customer_ids", request.customer_ids, most=MAX_BATCH)
        found = await self.store.scores_of(ids)
        return segmentation_pb2.GetScoresResponse(
            scores={c: _scores(doc) for c, doc in found.items()}
        )

    async def RecomputeScores(
        self, request: segmentation_pb2.RecomputeScoresRequest, context: Context
    ) -> segmentation_pb2.RecomputeScoresResponse:
        """Refit and rescore now."""
        run = await self.scoring.recompute()
        return segmentation_pb2.RecomputeScoresResponse(
            model_version=run.model_version,
            customers_scored=run.customers,
            parameters_json=run.parameters_json,
            computed_at=timestamp(run.computed_at),
        )


def _scores(doc: StoredScores) -> segmentation_pb2.CustomerScores:
    fitted = {
        "p_alive": doc.get("p_alive"),
        "expected_purchases_30d": doc.get("expected_purchases_30d"),
        "expected_purchases_90d": doc.get("expected_purchases_90d"),
        "clv_12m": doc.get("clv_12m"),
    }
    predictions = {k: float(v) for k, v in fitted.items() if v is not None}
    return segmentation_pb2.CustomerScores(
        customer_id=doc["_id"],
        recency_days=int(doc.get("recency", 0)),
        frequency=int(doc.get("frequency", 0)),
        monetary=float(doc.get("monetary", 0.0)),
        r_score=int(doc.get("r_score", 0)),
        f_score=int(doc.get("f_score", 0)),
        m_score=int(doc.get("m_score", 0)),
        rfm_cell=str(doc.get("rfm_cell", "")),
        **predictions,
        model_version=str(doc.get("model_version", "")),
        computed_at=timestamp(doc.get("computed_at")),
    )


def _write_token(customer_id: str) -> str:
    return base64.urlsafe_b64encode(customer_id.encode()).decode()


def _read_token(token: str) -> str:
    if not token:
        return ""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument("page_token is not one this service issued")
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this service issued") from None
