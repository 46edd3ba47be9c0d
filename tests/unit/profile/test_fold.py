"""The profile fold: MongoDB-safe field names, the delta an event makes, and the Kafka input."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import events_pb2
from services.platform.errors import PoisonMessage
from services.platform.fieldnames import field_key, original_name
from services.profile.consumers import to_resolved_event
from services.profile.fold import (
    IDENTIFY,
    TRACK,
    ProfileDelta,
    ResolvedEvent,
    fold,
)

WHEN = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Order Completed", "Order Completed"),
        ("order.completed", "order%2Ecompleted"),
        ("$revenue", "%24revenue"),
        ("price$", "price$"),
        ("50% off", "50%25 off"),
        ("$a.b%c", "%24a%2Eb%25c"),
        ("%2E", "%252E"),
        ("%24", "%2524"),
        ("", ""),
    ],
)
def test_field_key_escapes_what_mongodb_reserves(name: str, key: str) -> None:
    assert field_key(name) == key
    assert original_name(key) == name


def test_field_key_never_contains_a_dot_or_leading_dollar() -> None:
    for name in ("a.b.c", "$set", "$.$", "..", "$"):
        key = field_key(name)
        assert "." not in key
        assert not key.startswith("$")


def test_field_key_round_trips_every_short_name() -> None:
    alphabet = "%.$2E45a"
    for length in range(5):
        for chars in itertools.product(alphabet, repeat=length):
            name = "".join(chars)
            key = field_key(name)
            assert original_name(key) == name, (name, key)
            assert "." not in key
            assert not key.startswith("$")


def event(
    kind: str = TRACK, name: str = "Order Completed", traits: dict[str, Any] | None = None
) -> ResolvedEvent:
    return ResolvedEvent(
        event_id="evt-1",
        customer_id="cust-1",
        kind=kind,
        name=name,
        occurred_at=WHEN,
        traits=traits or {},
    )


def test_track_counts_the_event_name() -> None:
    assert fold(event()) == ProfileDelta(
        event_id="evt-1",
        customer_id="cust-1",
        set_traits={},
        count_increments={"Order Completed": 1},
        seen_at=WHEN,
        latest={"event_last.Order Completed": WHEN},
        timed_fields={"cart.last_ordered": {"at": WHEN}},
        active_at=WHEN,
    )


def test_track_count_key_is_escaped() -> None:
    delta = fold(event(name="$checkout.started"))
    assert delta.count_increments == {"%24checkout%2Estarted": 1}


def test_track_without_a_name_counts_nothing() -> None:
    assert fold(event(name="")).count_increments == {}


def test_identify_sets_traits_and_counts_nothing() -> None:
    delta = fold(
        event(kind=IDENTIFY, name="", traits={"email": "ada@example.com", "plan.tier": "gold"})
    )
    assert delta.set_traits == {"email": "ada@example.com", "plan%2Etier": "gold"}
    assert delta.count_increments == {}
    assert delta.seen_at == WHEN
    assert delta.customer_id == "cust-1"
    assert delta.event_id == "evt-1"


@pytest.mark.parametrize("kind", ["other", IDENTIFY])
def test_only_track_counts(kind: str) -> None:
    assert fold(event(kind=kind, name="Viewed Home")).count_increments == {}


def test_every_event_moves_seen_at() -> None:
    assert fold(event(kind="other", name="Home")).seen_at == WHEN


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def struct(value: dict[str, Any]) -> Struct:
    out = Struct()
    out.update(value)
    return out


def test_to_resolved_event_translates_a_track() -> None:
    message = events_pb2.Event(
        event_id="evt-1",
        customer_id="cust-1",
        type=events_pb2.EVENT_TYPE_TRACK,
        name="Order Completed",
        properties=struct({"total": 10}),
        timestamp=stamp(WHEN),
        received_at=stamp(datetime(2024, 5, 2, tzinfo=UTC)),
    )
    assert to_resolved_event(message) == ResolvedEvent(
        event_id="evt-1",
        customer_id="cust-1",
        kind=TRACK,
        name="Order Completed",
        occurred_at=WHEN,
        traits={},
        properties={"total": 10.0},
    )


def test_to_resolved_event_merges_context_traits_under_traits() -> None:
    message = events_pb2.Event(
        event_id="evt-1",
        customer_id="cust-1",
        type=events_pb2.EVENT_TYPE_IDENTIFY,
        traits=struct({"plan": "gold", "email": "new@example.com"}),
        context=struct({"traits": {"email": "old@example.com", "city": "Lyon"}, "ip": "10.0.0.1"}),
        timestamp=stamp(WHEN),
    )
    resolved = to_resolved_event(message)
    assert resolved.kind == IDENTIFY
    # The call's own traits win over the context's.
    assert resolved.traits == {"plan": "gold", "email": "new@example.com", "city": "Lyon"}


def test_to_resolved_event_uses_context_traits_alone() -> None:
    message = events_pb2.Event(
        event_id="evt-1",
        customer_id="cust-1",
        type=events_pb2.EVENT_TYPE_IDENTIFY,
        context=struct({"traits": {"city": "Lyon"}}),
    )
    assert to_resolved_event(message).traits == {"city": "Lyon"}


def test_to_resolved_event_ignores_context_traits_that_are_not_an_object() -> None:
    message = events_pb2.Event(
        event_id="evt-1",
        customer_id="cust-1",
        type=events_pb2.EVENT_TYPE_IDENTIFY,
        context=struct({"traits": "nope"}),
    )
    assert to_resolved_event(message).traits == {}


def test_to_resolved_event_falls_back_to_received_at() -> None:
    received = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
    message = events_pb2.Event(
        event_id="evt-1",
        customer_id="cust-1",
        type=events_pb2.EVENT_TYPE_PAGE,
        name="Home",
        received_at=stamp(received),
    )
    resolved = to_resolved_event(message)
    assert resolved.occurred_at == received
    assert resolved.occurred_at.tzinfo is not None
    assert resolved.kind == "page"


@pytest.mark.parametrize(
    "message",
    [
        events_pb2.Event(event_id="evt-1", type=events_pb2.EVENT_TYPE_TRACK, name="x"),
        events_pb2.Event(customer_id="cust-1", type=events_pb2.EVENT_TYPE_TRACK, name="x"),
    ],
)
def test_to_resolved_event_without_ids_is_poison(message: events_pb2.Event) -> None:
    with pytest.raises(PoisonMessage, match="customer_id"):
        to_resolved_event(message)


def test_fold_of_a_translated_identify() -> None:
    message = events_pb2.Event(
        event_id="evt-7",
        customer_id="cust-7",
        type=events_pb2.EVENT_TYPE_IDENTIFY,
        traits=struct({"$name": "Ada"}),
        timestamp=stamp(WHEN),
    )
    delta = fold(to_resolved_event(message))
    assert delta.set_traits == {"%24name": "Ada"}
    assert delta.count_increments == {}
    assert delta.seen_at == WHEN


def test_merge_sums_counts_keeps_latest_traits_and_seen_bounds() -> None:
    from datetime import UTC, datetime, timedelta

    from services.profile.fold import ProfileDelta, merge

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    merged = merge(
        [
            ProfileDelta("e1", "c", {"plan": "free", "city": "Oslo"}, {"Viewed": 1}, t0),
            ProfileDelta(
                "e2", "c", {"plan": "gold"}, {"Viewed": 1, "Bought": 1}, t0 - timedelta(hours=1)
            ),
        ]
    )
    # e2 arrived last but happened earlier: the plan from e1, the later event, stands.
    assert merged.set_traits == {"plan": "free", "city": "Oslo"}
    assert merged.count_increments == {"Viewed": 2, "Bought": 1}
    assert merged.first_seen == t0 - timedelta(hours=1)
    assert merged.last_seen == t0


def test_consent_updates_are_timed_and_recorded_in_history() -> None:
    from services.profile.fold import ResolvedEvent, fold, merge

    early, late = WHEN, WHEN + timedelta(hours=1)
    granted = ResolvedEvent(
        "c1",
        "cust",
        "track",
        "Consent Updated",
        late,
        source="web",
        properties={"purpose": "email_marketing", "state": "GRANTED"},
    )
    denied = ResolvedEvent(
        "c2",
        "cust",
        "track",
        "Consent Updated",
        early,
        source="store",
        properties={
            "consent": {
                "email_marketing": "denied",
                "sms_marketing": "granted",
                "telepathy": "granted",
            }
        },
    )
    merged = merge([fold(granted), fold(denied)])  # the older one arrives last
    assert merged.timed_fields["consent.email_marketing"]["state"] == "granted"
    assert merged.timed_fields["consent.sms_marketing"]["state"] == "granted"
    assert "consent.telepathy" not in merged.timed_fields
    assert [(e["purpose"], e["state"]) for e in merged.appends["consent_history"]] == [
        ("email_marketing", "granted"),
        ("email_marketing", "denied"),
        ("sms_marketing", "granted"),
    ]


def test_behaviour_keeps_channels_sources_and_the_last_page() -> None:
    from services.profile.fold import ResolvedEvent, fold, merge

    first = ResolvedEvent("p1", "c", "page", "Home", WHEN, source="http-api", channel="browser")
    second = ResolvedEvent(
        "p2", "c", "page", "Shoes", WHEN + timedelta(minutes=5), source="http-api", channel="mobile"
    )
    merged = merge([fold(second), fold(first)])
    assert merged.timed_fields["last_page"]["name"] == "Shoes"
    assert merged.unions == {"channels": ["browser", "mobile"], "sources": ["http-api"]}


def test_engagement_is_derived_from_counts_and_last_times() -> None:
    from services.profile.engagement import engagement

    found = {
        e.kind: e
        for e in engagement(
            {"Email Opened": 3, "Email Link Clicked": 1, "Email Clicked": 2},
            {"Email Opened": WHEN, "Email Clicked": WHEN + timedelta(days=1)},
        )
    }
    assert (found["email_opened"].count, found["email_opened"].last_at) == (3, WHEN)
    assert found["email_clicked"].count == 3
    assert found["email_clicked"].last_at == WHEN + timedelta(days=1)
    assert (found["push_opened"].count, found["push_opened"].last_at) == (0, None)
