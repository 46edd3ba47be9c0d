"""What became of a pass update push (the APNs client answers in these words; the dispatcher
acts on them)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PushOutcome(StrEnum):
    """What became of one pass update push."""

    DELIVERED = "delivered"
    # 410: the phone removed the pass or turned updates off; delete the registration.
    UNREGISTERED = "unregistered"
    # Any other 4xx: the request is wrong (token, topic, credentials); retrying cannot help.
    REJECTED = "rejected"
    # 429, 5xx or transport errors until the attempts ran out.
    FAILED = "failed"


@dataclass(frozen=True)
class PushResult:
    """The final answer for one push. ``status`` is ``None`` when no HTTP answer came (bad
    token caught before sending, or transport errors); ``timestamp_ms`` is APNs's time the
    token stopped being valid (410 only)."""

    outcome: PushOutcome
    status: int | None
    reason: str
    apns_id: str
    attempts: int
    timestamp_ms: int | None = None
