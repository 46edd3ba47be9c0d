"""What the timeline of recent events keeps: whether it is kept, for how long, and how many
entries a page may show (the store applies them; settings build them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimelineSettings:
    """Whether events are kept per customer, for how long, and how many a page may show."""

    enabled: bool = True
    ttl_s: int = 180 * 24 * 3600
    cap: int = 1_000
