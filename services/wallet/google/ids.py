"""Google Wallet ids and pass types: which resource (loyalty, offer, eventTicket) a Lodestar
pass kind becomes, and the ``<issuer>.<suffix>`` ids of classes and objects, checked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from services.wallet.templates import PassKind

Resource = Literal["loyalty", "offer", "eventTicket"]
RESOURCES: tuple[Resource, ...] = ("loyalty", "offer", "eventTicket")
_RESOURCE_OF_KIND: Mapping[PassKind, Resource] = {
    PassKind.STORE_CARD: "loyalty",
    PassKind.COUPON: "offer",
    PassKind.EVENT_TICKET: "eventTicket",
}
_ISSUER_ID = re.compile(r"[0-9]+")
_ID_SUFFIX = re.compile(r"[A-Za-z0-9._-]+")


def resource_for(kind: PassKind) -> Resource:
    """The Google Wallet pass type of a Lodestar pass kind."""
    resource = _RESOURCE_OF_KIND.get(kind)
    if resource is None:
        raise ValueError(
            f"Google Wallet passes of kind {kind.value!r} are not supported; issue a "
            f"{', '.join(k.value for k in _RESOURCE_OF_KIND)} instead"
        )
    return resource


def check_resource(resource: str) -> Resource:
    """``resource`` as a known pass type; ``ValueError`` naming the known ones otherwise."""
    for known in RESOURCES:
        if resource == known:
            return known
    raise ValueError(f"unknown Google Wallet resource {resource!r}; known: {', '.join(RESOURCES)}")


def valid_issuer_id(issuer_id: str) -> bool:
    """True when ``issuer_id`` is digits, as Google assigns them."""
    return _ISSUER_ID.fullmatch(issuer_id) is not None


def _qualified(issuer_id: str, suffix: str) -> str:
    if not valid_issuer_id(issuer_id):
        raise ValueError(f"issuer id {issuer_id!r} must be the digits Google assigned")
    if not _ID_SUFFIX.fullmatch(suffix):
        raise ValueError(f"id suffix {suffix!r} may contain only letters, digits, '.', '_' and '-'")
    return f"{issuer_id}.{suffix}"


def class_id(issuer_id: str, template_name: str, kind: PassKind) -> str:
    """The id of the class of a template's passes of one kind: ``<issuer>.<template>.<kind>``."""
    return _qualified(issuer_id, f"{template_name}.{kind.value}")


def object_id(issuer_id: str, serial_number: str) -> str:
    """The id of the object of one pass: ``<issuer>.<serial number>``."""
    return _qualified(issuer_id, serial_number)


def check_id(value: str) -> str:
    """``value`` when it is a well-formed ``<issuerId>.<suffix>`` id, else ``ValueError``."""
    issuer, dot, suffix = value.partition(".")
    if not dot:
        raise ValueError(f"Google Wallet id {value!r} must look like <issuerId>.<suffix>")
    return _qualified(issuer, suffix)
