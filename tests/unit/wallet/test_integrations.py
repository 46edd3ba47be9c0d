"""The wallet's event consumer honours Segment's ``integrations``: events turned away from
"Lodestar Wallet" never reach the pass updates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from lodestar.v1 import events_pb2
from services.platform.bus import Delivery
from services.wallet.consumers import ResolvedEventHandler
from services.wallet.live import LiveUpdates


class Recording:
    """Stands in for the live updates: keeps the ids of the events handed on."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def events(self, events: Sequence[events_pb2.Event]) -> int:
        self.seen += [e.event_id for e in events]
        return 0


def order(event_id: str, integrations: dict[str, Any]) -> Delivery[events_pb2.Event]:
    event = events_pb2.Event(
        event_id=event_id,
        customer_id="c-1",
        type=events_pb2.EVENT_TYPE_TRACK,
        name="Order Completed",
    )
    event.integrations.update(integrations)
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


async def test_events_kept_out_of_the_wallet_are_skipped() -> None:
    live = Recording()
    await ResolvedEventHandler(cast(LiveUpdates, live))(
        [
            order("plain", {}),
            order("all-off", {"All": False}),
            order("wallet-off", {"Lodestar Wallet": False}),
            order("wallet-on", {"All": False, "Lodestar Wallet": True}),
            order("segments-off", {"Lodestar Segments": False}),
        ]
    )
    assert live.seen == ["plain", "wallet-on", "segments-off"]
