"""Identity's stored records as the API reads them: a merge from the audit trail and an
identifier read back for display. The store returns these, so ``mypy`` checks every field
read; pure types, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict


class MergeRecord(TypedDict):
    """One merge of the audit trail (``merges``), keyed by the merge id."""

    _id: str
    survivor_id: str
    merged_ids: list[str]
    caused_by_event_id: str
    at: datetime


@dataclass(frozen=True)
class StoredIdentifier:
    """An identifier read back, decrypted for display."""

    type: str
    value: str
    first_seen: datetime
    last_seen: datetime
    source: str
