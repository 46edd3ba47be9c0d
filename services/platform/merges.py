"""One handler of ``identity.merged`` for every service: it checks each merge and hands it, in
order, to what the service does when customers merge (move their events, passes, ...).

A merge without an event id or a survivor is poison (dead-lettered, never half applied); the
survivor is never among the ids it hands on, and an id named twice is handed on once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from lodestar.v1 import events_pb2
from services.platform.bus import Delivery
from services.platform.errors import PoisonMessage


@dataclass(frozen=True)
class Merge:
    """Customers ``merged_ids`` became ``survivor_id`` (``event_id`` names the merge)."""

    event_id: str
    survivor_id: str
    merged_ids: tuple[str, ...]


def read_merge(message: events_pb2.IdentityMerged) -> Merge:
    """The merge a message announces (``PoisonMessage`` naming what is missing)."""
    if not message.event_id or not message.survivor_id:
        raise PoisonMessage("identity merge without event_id or survivor_id")
    merged = dict.fromkeys(m for m in message.merged_ids if m and m != message.survivor_id)
    return Merge(message.event_id, message.survivor_id, tuple(merged))


class MergeHandler:
    """Applies each merge of a batch in order with the service's ``follow``."""

    def __init__(self, follow: Callable[[Merge], Awaitable[None]]) -> None:
        self.follow = follow

    async def __call__(self, batch: Sequence[Delivery[events_pb2.IdentityMerged]]) -> None:
        """Hand every merge of the batch on, one after the other (a merge of nobody is
        skipped)."""
        for delivery in batch:
            merge = read_merge(delivery.message)
            if merge.merged_ids:
                await self.follow(merge)
