"""The persistence room of segmentation: the MongoDB collections (:mod:`.documents`) and
segment rules pushed down to MongoDB filters (:mod:`.rule_query`). The only MongoDB code of
the service; it returns the typed records of :mod:`services.segmentation.records`."""

from __future__ import annotations

from services.segmentation.records import membership_id
from services.segmentation.store.documents import (
    SegmentationStore,
    SegmentExists,
)

__all__ = ["SegmentExists", "SegmentationStore", "membership_id"]
