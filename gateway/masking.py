"""PII masking: without ``read:pii`` a request sees PII trait values and e-mail and phone
identifiers as ``MASKED``; keys and every other value are unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strawberry.types import Info

from gateway.scopes import MASKED, can_read_pii
from services.platform.pii import PII_IDENTIFIER_TYPES, PII_TRAITS


def masked_traits(info: Info, traits: Mapping[str, Any]) -> dict[str, Any]:
    """``traits`` (or event properties) as this request may see them."""
    if can_read_pii(info):
        return dict(traits)
    return {k: MASKED if k in PII_TRAITS else v for k, v in traits.items()}


def masked_identifier(info: Info, type_: str, value: str) -> str:
    """An identifier's value as this request may see it."""
    if type_ in PII_IDENTIFIER_TYPES and not can_read_pii(info):
        return MASKED
    return value
