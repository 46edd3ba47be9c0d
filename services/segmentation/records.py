"""What segmentation keeps, as the domain reads it: the typed records the store returns and
takes (segment definitions, memberships, recent events, scores). Pure types, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired, Required, TypedDict

from services.segmentation.rules import ProfileView

__all__ = [
    "MemberRecord",
    "ProfileView",
    "SegmentChanges",
    "StoredEvent",
    "StoredScores",
    "StoredSegment",
    "membership_id",
]


def membership_id(segment_id: str, customer_id: str) -> str:
    """The key of one membership document."""
    return f"{segment_id}:{customer_id}"


class StoredSegment(TypedDict):
    """A segment definition as stored: the rule as canonical JSON, its version and status,
    and the progress of its backfill."""

    _id: str
    name: str
    version: int
    status: str
    rule: str
    description: NotRequired[str]
    created_at: NotRequired[datetime]
    updated_at: NotRequired[datetime]
    backfill_evaluated: NotRequired[int]
    backfill_total: NotRequired[int]


class SegmentChanges(TypedDict, total=False):
    """The fields an update of a definition sets."""

    name: str
    description: str
    rule: str
    version: int
    status: str
    updated_at: datetime
    backfill_evaluated: int
    backfill_total: int


class MemberRecord(TypedDict):
    """One customer in one segment, since when and for which version of its rule."""

    _id: str
    segment_id: str
    customer_id: str
    since: datetime
    segment_version: int


class StoredEvent(TypedDict):
    """A recent track event kept for event conditions (scalar, non-personal properties)."""

    _id: str
    customer_id: str
    name: str
    at: datetime
    properties: dict[str, str | int | float | bool]
    stored_at: datetime


class StoredScores(TypedDict, total=False):
    """A customer's predictive scores: RFM from every run, the purchase models' once they
    are fitted."""

    _id: Required[str]
    recency: int
    frequency: int
    monetary: float
    r_score: int
    f_score: int
    m_score: int
    rfm_cell: str
    model_version: str
    computed_at: datetime
    p_alive: float
    expected_purchases_30d: float
    expected_purchases_90d: float
    clv_12m: float
