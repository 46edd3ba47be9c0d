"""Google Wallet passes as pure data: the pass types and ids (:mod:`.ids`), the class and
object bodies built from the platform-neutral pass and the messages (:mod:`.bodies`), and the
claims of a "Save to Google Wallet" link (:mod:`.claims`).

Google keeps the pass: Lodestar inserts a *class* per template and kind (brand, layout) and an
*object* per pass (balances, texts, state), then patches the object when the profile changes.
A phone gets a pass through a save link whose signed JWT names only the object ids, so the link
stays short and the content always comes from the API. The REST calls, the OAuth token exchange
and the JWT signing are the client's (:mod:`services.wallet.clients.google`).
"""

from __future__ import annotations

from services.wallet.google.bodies import (
    NOTIFY_ON_UPDATE,
    TEXT_AND_NOTIFY,
    google_class,
    google_object,
    localized_string,
    object_state,
    text_message,
)
from services.wallet.google.claims import save_claims
from services.wallet.google.ids import (
    RESOURCES,
    Resource,
    check_id,
    check_resource,
    class_id,
    object_id,
    resource_for,
    valid_issuer_id,
)

__all__ = [
    "NOTIFY_ON_UPDATE",
    "RESOURCES",
    "TEXT_AND_NOTIFY",
    "Resource",
    "check_id",
    "check_resource",
    "class_id",
    "google_class",
    "google_object",
    "localized_string",
    "object_id",
    "object_state",
    "resource_for",
    "save_claims",
    "text_message",
    "valid_issuer_id",
]
