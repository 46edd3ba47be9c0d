"""Sessions: runs of activity with no gap longer than the session timeout (30 minutes by
default).

A session is kept as a span ``{"s": start, "l": last activity}``. Every event is a span of
its own, and spans whose gap is within the timeout join: the sessions are the joined spans.
Joining is a union, so it does not depend on the order events arrive in or on how they are
batched, and an event that lands in a gap can bridge two sessions into one. The store keeps
the most recent spans and counts the older ones it let go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DEFAULT_TIMEOUT = timedelta(minutes=30)
# Spans kept per profile; older sessions only add to the count.
KEEP = 100

Span = dict[str, datetime]


def join(spans: Iterable[Mapping[str, datetime]], timeout: timedelta) -> list[Span]:
    """Spans merged where one starts within ``timeout`` of the previous one's last
    activity, oldest first."""
    joined: list[Span] = []
    for span in sorted(spans, key=lambda s: (s["s"], s["l"])):
        if joined and span["s"] <= joined[-1]["l"] + timeout:
            joined[-1]["l"] = max(joined[-1]["l"], span["l"])
        else:
            joined.append({"s": span["s"], "l": span["l"]})
    return joined


def spans_of(times: Iterable[datetime], timeout: timedelta) -> list[Span]:
    """The sessions a set of activity times forms."""
    return join(({"s": t, "l": t} for t in times), timeout)


def trim(spans: Sequence[Span], keep: int = KEEP) -> tuple[list[Span], int]:
    """The newest ``keep`` spans, and how many older ones were let go."""
    dropped = max(0, len(spans) - keep)
    return list(spans[dropped:]), dropped


@dataclass(frozen=True)
class Sessions:
    """What a profile says about sessions."""

    count: int
    last_started_at: datetime | None
    last_active_at: datetime | None


def summary(spans: Sequence[Mapping[str, datetime]], earlier: int) -> Sessions:
    """The session count (kept spans plus those let go) and the latest session."""
    if not spans:
        return Sessions(earlier, None, None)
    latest = max(spans, key=lambda s: s["s"])
    return Sessions(earlier + len(spans), latest["s"], latest["l"])


def update_stages(new: Sequence[Span], timeout: timedelta, keep: int = KEEP) -> list[Any]:
    """Update-pipeline stages that join ``new`` spans into the stored ``sessions`` and keep
    the newest ``keep`` of them, counting the rest in ``sessions_earlier``."""
    gap_ms = int(timeout.total_seconds() * 1000)
    combined = {
        "$sortArray": {
            "input": {"$concatArrays": [{"$ifNull": ["$sessions", []]}, {"$literal": list(new)}]},
            "sortBy": {"s": 1, "l": 1},
        }
    }
    joins = {
        "$let": {
            "vars": {"last": {"$last": "$$value"}},
            "in": {
                "$cond": [
                    {
                        "$and": [
                            {"$gt": [{"$size": "$$value"}, 0]},
                            {"$lte": ["$$this.s", {"$add": ["$$last.l", gap_ms]}]},
                        ]
                    },
                    {
                        "$concatArrays": [
                            {"$slice": ["$$value", {"$subtract": [{"$size": "$$value"}, 1]}]},
                            [{"s": "$$last.s", "l": {"$max": ["$$last.l", "$$this.l"]}}],
                        ]
                    },
                    {"$concatArrays": ["$$value", ["$$this"]]},
                ]
            },
        }
    }
    excess = {"$max": [0, {"$subtract": [{"$size": "$sessions"}, keep]}]}
    return [
        {"$set": {"sessions": {"$reduce": {"input": combined, "initialValue": [], "in": joins}}}},
        {
            "$set": {
                "sessions_earlier": {"$add": [{"$ifNull": ["$sessions_earlier", 0]}, excess]},
                "sessions": {"$slice": ["$sessions", -keep]},
            }
        },
    ]
