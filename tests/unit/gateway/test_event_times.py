"""Event times at the door: sentAt corrects the device clock, and what is still far in the
future (or implausibly old) is refused naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.segment import InvalidEvent, parse_batch, parse_call

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def when(call: dict[str, Any], received: datetime = RECEIVED) -> datetime:
    _, event = parse_call({"userId": "u", "event": "e", **call}, "track", received)
    return event.timestamp.ToDatetime(UTC)


def refused(call: dict[str, Any]) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as raised:
        parse_call({"userId": "u", "event": "e", **call}, "track", RECEIVED)
    return raised.value


def test_sent_at_moves_the_timestamp_by_the_clock_skew() -> None:
    # The device clock is 2 h ahead: it says it sent at 14:00 what happened at 13:50.
    assert when(
        {"timestamp": "2024-05-01T13:50:00Z", "sentAt": "2024-05-01T14:00:00Z"}
    ) == datetime(2024, 5, 1, 11, 50, tzinfo=UTC)


def test_sent_at_corrects_the_original_timestamp_too() -> None:
    assert when(
        {"originalTimestamp": "2024-05-01T09:00:00Z", "sentAt": "2024-05-01T09:00:30Z"}
    ) == RECEIVED - timedelta(seconds=30)


def test_a_device_clock_years_ahead_is_corrected_not_refused() -> None:
    assert when(
        {"timestamp": "9999-01-01T00:00:00Z", "sentAt": "9999-01-01T00:00:10Z"}
    ) == RECEIVED - timedelta(seconds=10)


def test_sent_at_is_kept_as_sent() -> None:
    _, event = parse_call(
        {"userId": "u", "event": "e", "sentAt": "2024-05-01T14:00:00+02:00"}, "track", RECEIVED
    )
    assert event.sent_at.ToDatetime(UTC) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert event.timestamp.ToDatetime(UTC) == RECEIVED


def test_up_to_a_day_ahead_is_accepted() -> None:
    assert when({"timestamp": "2024-05-02T12:00:00Z"}) == RECEIVED + timedelta(days=1)


@pytest.mark.parametrize(
    ("call", "path", "words"),
    [
        ({"timestamp": "2024-05-02T12:00:01Z"}, "timestamp", "more than a day after"),
        ({"timestamp": "9999-12-31T23:59:59Z"}, "timestamp", "more than a day after"),
        ({"originalTimestamp": "3000-01-01T00:00:00Z"}, "originalTimestamp", "a day after"),
        # Sent (by its own clock) long before it happened: the correction cannot fix that.
        (
            {"timestamp": "2024-05-05T00:00:00Z", "sentAt": "2024-05-01T00:00:00Z"},
            "timestamp",
            "corrected by sentAt",
        ),
        ({"timestamp": "1999-12-31T23:59:59Z"}, "timestamp", "before 2000-01-01"),
        ({"timestamp": "0001-01-01T00:00:00Z"}, "timestamp", "before 2000-01-01"),
        (
            {"timestamp": "2024-05-01T11:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
            "timestamp",
            "corrected by sentAt",
        ),
        (
            {"timestamp": "9999-12-31T00:00:00Z", "sentAt": "0001-01-01T00:00:00Z"},
            "timestamp",
            "corrected by sentAt",
        ),
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp", "out of range"),
        ({"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp", "out of range"),
        ({"sentAt": "9999-12-31T23:59:59-14:00"}, "sentAt", "out of range"),
    ],
)
def test_implausible_event_times_are_refused_naming_the_field(
    call: dict[str, Any], path: str, words: str
) -> None:
    error = refused(call)
    assert error.path == path
    assert words in error.message


def test_batch_sent_at_corrects_items_without_their_own() -> None:
    calls = parse_batch(
        {
            "sentAt": "2030-01-01T00:00:00Z",
            "batch": [
                {"type": "track", "userId": "u", "event": "e", "timestamp": "2030-01-01T00:00:00Z"},
                {
                    "type": "track",
                    "userId": "u",
                    "event": "e",
                    "timestamp": "2024-05-01T11:00:00Z",
                    "sentAt": "2024-05-01T11:00:00Z",
                },
            ],
        },
        RECEIVED,
        32 * 1024,
    )
    assert [event.timestamp.ToDatetime(UTC) for _, event in calls] == [RECEIVED, RECEIVED]


def test_far_future_batch_item_names_its_index() -> None:
    item = {"type": "track", "userId": "u", "event": "e"}
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(
            {"batch": [item, {**item, "timestamp": "2999-01-01T00:00:00Z"}]}, RECEIVED, 32 * 1024
        )
    assert raised.value.path == "batch[1].timestamp"
