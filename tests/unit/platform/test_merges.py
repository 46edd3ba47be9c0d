"""The one ``identity.merged`` handler every service uses."""

from __future__ import annotations

import asyncio

import pytest

from lodestar.v1 import events_pb2
from services.platform.bus import Delivery
from services.platform.errors import PoisonMessage
from services.platform.merges import Merge, MergeHandler, read_merge


def delivery(
    message: events_pb2.IdentityMerged, offset: int = 0
) -> Delivery[events_pb2.IdentityMerged]:
    return Delivery("t", 0, offset, b"k", message.SerializeToString(), message)


def test_the_survivor_and_repeats_are_not_handed_on() -> None:
    merge = read_merge(
        events_pb2.IdentityMerged(event_id="m1", survivor_id="s", merged_ids=["a", "s", "b", "a"])
    )
    assert merge == Merge("m1", "s", ("a", "b"))


@pytest.mark.parametrize(
    "message",
    [
        events_pb2.IdentityMerged(survivor_id="s", merged_ids=["a"]),
        events_pb2.IdentityMerged(event_id="m1", merged_ids=["a"]),
    ],
)
def test_a_merge_without_event_or_survivor_is_poison(message: events_pb2.IdentityMerged) -> None:
    with pytest.raises(PoisonMessage, match="without event_id or survivor_id"):
        read_merge(message)


def test_merges_are_followed_in_order_and_empty_ones_skipped() -> None:
    seen: list[Merge] = []

    async def follow(merge: Merge) -> None:
        seen.append(merge)

    batch = [
        delivery(events_pb2.IdentityMerged(event_id="m1", survivor_id="s", merged_ids=["a"]), 0),
        delivery(events_pb2.IdentityMerged(event_id="m2", survivor_id="s", merged_ids=["s"]), 1),
        delivery(events_pb2.IdentityMerged(event_id="m3", survivor_id="t", merged_ids=["s"]), 2),
    ]
    asyncio.run(MergeHandler(follow)(batch))
    assert seen == [Merge("m1", "s", ("a",)), Merge("m3", "t", ("s",))]
