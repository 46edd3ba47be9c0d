"""Every service goes by the same trusted event time: a device clock far in the future never
freezes a trait, pins a last-seen time or keeps a customer "recently active" for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.struct_pb2 import Struct

from lodestar.v1 import events_pb2
from services.platform.timestamps import CLOCK_ALLOWANCE, time_of, timestamp
from services.recommendation.consumers import event_interactions
from services.segmentation.consumers import event_record

NOW = datetime.now(UTC).replace(microsecond=0)
FAR = datetime(9999, 12, 31, tzinfo=UTC)


def track(occurred: datetime | None, received: datetime | None) -> events_pb2.Event:
    properties = Struct()
    properties.update({"product_id": "sku-1"})
    return events_pb2.Event(
        event_id="e-1",
        customer_id="c-1",
        type=events_pb2.EVENT_TYPE_TRACK,
        name="Product Viewed",
        properties=properties,
        timestamp=timestamp(occurred),
        received_at=timestamp(received),
    )


def test_a_far_future_time_is_the_receipt() -> None:
    assert time_of(track(FAR, NOW), NOW) == NOW


def test_a_time_within_the_allowance_is_kept() -> None:
    ahead = NOW + CLOCK_ALLOWANCE
    assert time_of(track(ahead, NOW), NOW) == ahead
    past = NOW - timedelta(days=3)
    assert time_of(track(past, NOW), NOW) == past


def test_a_receipt_in_the_future_is_now() -> None:
    assert time_of(track(FAR, FAR), NOW) == NOW
    assert time_of(track(None, FAR), NOW) == NOW


def test_segmentation_and_recommendation_keep_the_trusted_time() -> None:
    event = track(FAR, NOW)
    record = event_record(event)
    assert record is not None
    assert record["at"] <= datetime.now(UTC)
    interactions, _ = event_interactions(event)
    assert interactions
    assert all(i.at <= datetime.now(UTC) for i in interactions)


def test_recommendations_skip_events_turned_away_from_them() -> None:
    event = track(NOW, NOW)
    event.integrations.update({"All": False})
    assert event_interactions(event) == ([], [])
    event.integrations.update({"Lodestar Recommendations": True})
    assert event_interactions(event)[0]
