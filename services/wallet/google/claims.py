"""The claims of a "Save to Google Wallet" JWT (the client signs them): they name only the
objects' ids (the objects were inserted through the API already, so the link stays short and
holds no customer data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from services.wallet.google.ids import Resource, check_id, check_resource


class SaveClaims(TypedDict):
    """The claims of a save link: issuer, audience, type, issue time, origins, objects."""

    iss: str
    aud: str
    typ: str
    iat: int
    origins: list[str]
    # "<resource>Objects" -> the objects' ids.
    payload: dict[str, list[dict[str, str]]]


def save_claims(
    client_email: str,
    objects: Sequence[tuple[Resource, str]],
    origins: Sequence[str],
    now: float,
) -> SaveClaims:
    """The claims of the save link of ``objects``, issued by ``client_email`` at ``now``."""
    if not objects:
        raise ValueError("a save link needs at least one object")
    payload: dict[str, list[dict[str, str]]] = {}
    for resource, named in objects:
        known = check_resource(resource)
        payload.setdefault(f"{known}Objects", []).append({"id": check_id(named)})
    return {
        "iss": client_email,
        "aud": "google",
        "typ": "savetowallet",
        "iat": int(now),
        "origins": list(origins),
        "payload": payload,
    }
