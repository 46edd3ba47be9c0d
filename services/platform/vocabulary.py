"""Words the services share about customers: consent purposes and states, and the kinds of
engagement with the event names that count for each (the profile service derives them, rules
in segmentation read them)."""

from __future__ import annotations

from typing import Final

PURPOSES: Final = (
    "email_marketing",
    "wallet_marketing",
    "sms_marketing",
    "analytics",
    "personalization",
)
STATES: Final = ("granted", "denied")
# Engagement kinds and the event names (Segment spec and common variants) that count for them.
ENGAGEMENT_EVENTS: Final[dict[str, tuple[str, ...]]] = {
    "email_opened": ("Email Opened",),
    "email_clicked": ("Email Link Clicked", "Email Clicked"),
    "email_unsubscribed": ("Unsubscribed", "Email Unsubscribed"),
    "push_opened": ("Push Notification Opened", "Push Opened"),
    "wallet_pass_installed": ("Pass Installed", "Wallet Pass Installed"),
    "wallet_pass_removed": ("Pass Removed", "Wallet Pass Removed"),
}
