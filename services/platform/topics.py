"""Kafka topic names: ``lodestar.<domain>.<name>.v1``."""

from __future__ import annotations

EVENTS_RAW = "lodestar.events.raw.v1"
EVENTS_RESOLVED = "lodestar.events.resolved.v1"
IDENTITY_MERGED = "lodestar.identity.merged.v1"
PROFILE_CHANGED = "lodestar.profile.changed.v1"
SEGMENTS_MEMBERSHIP = "lodestar.segments.membership.v1"
PRIVACY = "lodestar.privacy.v1"
# Completions travel apart from requests so a consumer of one never has to parse the other.
PRIVACY_COMPLETED = "lodestar.privacy.completed.v1"
DEADLETTER = "lodestar.deadletter.v1"
# Passes installed, pushed and removed, keyed by customer (read by the gateway's live hub).
WALLET_PASS_EVENTS = "lodestar.wallet.pass-events.v1"  # noqa: S105 (a topic, not a secret)

# Topics that carry raw customer events (and so their PII): kept only this long.
EVENT_TOPICS = (EVENTS_RAW, EVENTS_RESOLVED)

ALL_TOPICS = (
    EVENTS_RAW,
    EVENTS_RESOLVED,
    IDENTITY_MERGED,
    PROFILE_CHANGED,
    SEGMENTS_MEMBERSHIP,
    PRIVACY,
    PRIVACY_COMPLETED,
    DEADLETTER,
    WALLET_PASS_EVENTS,
)
