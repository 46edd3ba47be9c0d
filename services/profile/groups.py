"""Groups (accounts: a company, a household) from Segment group calls, as pure logic.

A group call links its customer to the group and sets the *group's* traits, never the
customer's. Group traits are last-write-wins by the call's own event time, like customer
traits, so shuffled or redelivered streams give the same group.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.platform.fieldnames import field_key
from services.platform.validation import MAX_ID_LENGTH
from services.profile.fold import GROUP, ResolvedEvent
from services.profile.records import JsonObject


@dataclass(frozen=True)
class GroupChange:
    """What one group call does: link ``customer_id`` to ``group_id`` and set its traits."""

    event_id: str
    group_id: str
    customer_id: str
    # Trait keys are MongoDB-safe (``field_key``).
    traits: JsonObject
    at: datetime


def group_change(event: ResolvedEvent) -> GroupChange | None:
    """The group change an event makes, or ``None`` (not a group call, or no usable group
    id: events can reach Kafka by other paths than the ingest API's checks)."""
    if event.kind != GROUP or not event.group_id or len(event.group_id) > MAX_ID_LENGTH:
        return None
    return GroupChange(
        event_id=event.event_id,
        group_id=event.group_id,
        customer_id=event.customer_id,
        traits={field_key(k): v for k, v in event.group_traits.items()},
        at=event.occurred_at,
    )
