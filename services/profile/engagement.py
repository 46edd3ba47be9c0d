"""Consent, behaviour and engagement, as pure logic: which events set consent per purpose,
what channels and pages a customer uses, and how they engage with e-mail, push and wallet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.platform.vocabulary import ENGAGEMENT_EVENTS, PURPOSES, STATES

CONSENT_UPDATED = "Consent Updated"


def consent_changes(properties: Mapping[str, Any]) -> dict[str, str]:
    """``{purpose: state}`` from a ``Consent Updated`` event: either ``purpose`` + ``state``
    or a ``consent`` object; unknown purposes and states are ignored."""
    found: dict[str, Any] = {}
    if isinstance(properties.get("consent"), dict):
        found.update(properties["consent"])
    if isinstance(properties.get("purpose"), str):
        found[properties["purpose"]] = properties.get("state")
    return {
        purpose: state.lower()
        for purpose, state in found.items()
        if purpose in PURPOSES and isinstance(state, str) and state.lower() in STATES
    }


def validate_consent(purpose: str, state: str) -> None:
    """Raise ``ValueError`` naming a bad purpose or state (for the SetConsent RPC)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
    if state not in STATES:
        raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")


@dataclass(frozen=True)
class Engagement:
    """How often, and when last, the customer engaged in one way."""

    kind: str
    count: int
    last_at: datetime | None


def engagement(counts: Mapping[str, int], last: Mapping[str, datetime]) -> list[Engagement]:
    """Engagement per kind, from the event counts and last times (kinds never seen: 0)."""
    out = []
    for kind, names in ENGAGEMENT_EVENTS.items():
        times = [last[n] for n in names if n in last]
        out.append(Engagement(kind, sum(counts.get(n, 0) for n in names), max(times, default=None)))
    return out
