"""Kafka handlers of the wallet: profile changes, segment memberships, resolved events and
identity merges in, pass changes out (pushed by the dispatcher)."""

from __future__ import annotations

from collections.abc import Sequence

from lodestar.v1 import events_pb2
from services.platform.bus import Delivery
from services.platform.destinations import WALLET, event_allows
from services.platform.merges import Merge, MergeHandler
from services.wallet.live import LiveUpdates


class ProfileChangedHandler:
    """Loyalty figures and consent onto the customers' passes."""

    def __init__(self, live: LiveUpdates) -> None:
        self.live = live

    async def __call__(self, batch: Sequence[Delivery[events_pb2.ProfileChanged]]) -> None:
        """Apply the batch (the last change of each customer wins)."""
        await self.live.profile_changes([d.message for d in batch])


class MembershipHandler:
    """Segment-bound offers onto and off the customers' cards."""

    def __init__(self, live: LiveUpdates) -> None:
        self.live = live

    async def __call__(
        self, batch: Sequence[Delivery[events_pb2.SegmentMembershipChanged]]
    ) -> None:
        """Apply the batch in order."""
        await self.live.memberships([d.message for d in batch])


class ResolvedEventHandler:
    """Orders and survey answers; every other event is skipped without a database call."""

    def __init__(self, live: LiveUpdates) -> None:
        self.live = live

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        """Apply the batch in order, without the events whose ``integrations`` turn
        "Lodestar Wallet" off."""
        await self.live.events(
            [d.message for d in batch if event_allows(d.message.integrations, WALLET)]
        )


def merge_handler(live: LiveUpdates) -> MergeHandler:
    """``identity.merged``: a merged customer's passes follow the survivor."""

    async def follow(merge: Merge) -> None:
        await live.merge(merge.survivor_id, merge.merged_ids)

    return MergeHandler(follow)
