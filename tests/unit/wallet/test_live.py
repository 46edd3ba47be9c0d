"""Pure parts of live updates and wallet input checks: delivery windows told in words, offer
and field validation, and the settings that configure pushes and Google Wallet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.platform.errors import InvalidArgument
from services.wallet.googlepasses import message_rank
from services.wallet.live import delivery_message
from services.wallet.offers import checked_offer
from services.wallet.passes import checked_fields, checked_locations
from services.wallet.templates import DEFAULT_TEMPLATE

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("properties", "said"),
    [
        (
            {"delivery_start": "2026-11-24T10:00:00Z", "delivery_end": "2026-11-24T12:00:00Z"},
            "Your order arrives tomorrow between 10:00 and 12:00",
        ),
        (
            {"delivery_start": "2026-11-23T18:00:00+00:00"},
            "Your order arrives today at 18:00",
        ),
        (
            {"delivery_start": "2026-11-26T09:00:00Z", "delivery_end": "2026-11-26T11:30:00Z"},
            "Your order arrives on Thu 26 Nov between 09:00 and 11:30",
        ),
        ({}, "Your order has shipped"),
        ({"delivery_start": "soon"}, "Your order has shipped"),
    ],
)
def test_delivery_windows_are_told_in_words(properties: dict[str, str], said: str) -> None:
    assert delivery_message(properties, NOW, UTC) == said


def test_the_day_is_the_customers_day() -> None:
    # 23:30 UTC on the 23rd is already the 24th in Madrid: "today" there, not "tomorrow".
    late = {"delivery_start": "2026-11-23T23:30:00Z"}
    evening = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    assert delivery_message(late, evening, ZoneInfo("Europe/Madrid")) == (
        "Your order arrives today at 00:30"
    )


def test_offers_are_checked_field_by_field() -> None:
    good = checked_offer("spring-20", "seg-1", "20% off", survey_url="https://s.example.com/x")
    assert good["_id"] == "spring-20"
    for kwargs, message in (
        ({"offer_id": "has space"}, "offer_id must be"),
        ({"segment_id": ""}, "segment_id must be"),
        ({"title": ""}, "title must be"),
        ({"survey_url": "http://insecure.example.com"}, "survey_url must be an https:// URL"),
    ):
        values: dict[str, Any] = {"offer_id": "o", "segment_id": "s", "title": "t", **kwargs}
        with pytest.raises(InvalidArgument, match=message):
            checked_offer(
                values.pop("offer_id"), values.pop("segment_id"), values.pop("title"), **values
            )
    with pytest.raises(InvalidArgument, match=r"event\.starts_at is required"):
        checked_offer("o", "s", "t", event={"name": "Show", "latitude": 1.0, "longitude": 2.0})


def test_an_offer_event_place_that_is_not_numbers_is_named() -> None:
    event: dict[str, object] = {"name": "Show", "longitude": 2.0, "starts_at": NOW}
    for latitude in ("north", None):
        with pytest.raises(InvalidArgument, match=r"event\.latitude/longitude is not a place"):
            checked_offer("o", "s", "t", event={**event, "latitude": latitude})
    with pytest.raises(InvalidArgument, match=r"event\.latitude/longitude is not a place"):
        checked_offer("o", "s", "t", event=event)


def test_a_checked_offer_event_holds_exactly_the_event_fields() -> None:
    offer = checked_offer(
        "o",
        "s",
        "t",
        event={"name": "Show", "latitude": 1, "longitude": 2.5, "starts_at": NOW},
    )
    assert offer["event"] == {
        "name": "Show",
        "venue": "",
        "latitude": 1,
        "longitude": 2.5,
        "starts_at": NOW,
    }


def test_display_fields_and_places_are_checked() -> None:
    assert checked_fields(DEFAULT_TEMPLATE, {"points": "12", "tier": "Gold"}) == {
        "points": 12,
        "tier": "Gold",
    }
    with pytest.raises(InvalidArgument, match=r"fields\.points must not be negative"):
        checked_fields(DEFAULT_TEMPLATE, {"points": "-1"})
    with pytest.raises(InvalidArgument, match=r"fields\.status is longer than 200"):
        checked_fields(DEFAULT_TEMPLATE, {"status": "x" * 201})
    with pytest.raises(InvalidArgument, match=r"locations\[0\] is not a latitude/longitude"):
        checked_locations([{"latitude": 91.0, "longitude": 0.0}])
    with pytest.raises(InvalidArgument, match="at most 10"):
        checked_locations([{"latitude": 1.0, "longitude": 1.0}] * 11)


def test_google_messages_lead_with_the_tier() -> None:
    assert sorted(["points", "status", "tier"], key=message_rank) == ["tier", "status", "points"]
