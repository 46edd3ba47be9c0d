"""Sessions as joined spans of activity: order-free, bridging, trimmed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.profile import sessions
from services.profile.fold import ProfileDelta, ResolvedEvent, changed_paths, fold, merge

T0 = datetime(2026, 5, 1, tzinfo=UTC)
GAP = timedelta(minutes=30)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_a_gap_longer_than_the_timeout_starts_a_new_session() -> None:
    spans = sessions.spans_of([at(0), at(10), at(40), at(71), at(200)], GAP)
    # 10 -> 40 is exactly 30 minutes (same session); 40 -> 71 is 31 (a new one).
    assert spans == [
        {"s": at(0), "l": at(40)},
        {"s": at(71), "l": at(71)},
        {"s": at(200), "l": at(200)},
    ]
    summary = sessions.summary([at(0), at(10), at(40), at(71), at(200)], GAP)
    assert (summary.count, summary.last_started_at, summary.last_active_at) == (
        3,
        at(200),
        at(200),
    )


def test_a_late_event_in_the_gap_bridges_two_sessions() -> None:
    stored = sessions.spans_of([at(0), at(50)], GAP)
    assert len(stored) == 2
    joined = sessions.join([*stored, *sessions.spans_of([at(25)], GAP)], GAP)
    assert joined == [{"s": at(0), "l": at(50)}]


def test_the_timeout_is_configurable() -> None:
    assert len(sessions.spans_of([at(0), at(20)], timedelta(minutes=15))) == 2
    assert len(sessions.spans_of([at(0), at(20)], timedelta(minutes=60))) == 1


def test_merged_activity_keeps_the_most_recent_times() -> None:
    kept = sessions.combined([[at(5), at(1)], [at(3), at(9)]], keep=3)
    assert kept == [at(3), at(5), at(9)]


def test_no_activity_means_no_session() -> None:
    assert sessions.summary([], GAP) == sessions.Sessions(0, None, None)


@given(st.lists(st.integers(0, 2_000), min_size=1, max_size=30), st.randoms())
def test_joining_in_any_batches_and_order_gives_the_same_sessions(
    minutes: list[int], rng: random.Random
) -> None:
    expected = sessions.spans_of([at(m) for m in minutes], GAP)
    shuffled = list(minutes)
    rng.shuffle(shuffled)
    state: list[dict[str, datetime]] = []
    while shuffled:
        cut = rng.randint(1, len(shuffled))
        batch, shuffled = shuffled[:cut], shuffled[cut:]
        state = sessions.join([*state, *sessions.spans_of([at(m) for m in batch], GAP)], GAP)
    assert state == expected


def event(kind: str, minute: int, name: str = "") -> ResolvedEvent:
    return ResolvedEvent(f"e{minute}{kind}", "c1", kind, name, at(minute))


def test_only_activity_events_count_for_sessions() -> None:
    deltas: list[ProfileDelta] = [
        fold(event("track", 0, "Product Viewed")),
        fold(event("page", 5, "Home")),
        fold(event("screen", 9, "Cart")),
        fold(event("identify", 300)),
    ]
    assert merge(deltas).active == [at(0), at(5), at(9)]
    assert "behaviour.sessions" in changed_paths(deltas[0])
    assert "behaviour.sessions" not in changed_paths(deltas[3])
