"""What an API key may do: its scopes, the principal a request runs as, and the permission
every root field of the schema declares.

Each root field (query, mutation, subscription) names the one scope it needs with
``permission_classes=[needs(Scope.X)]``; a test checks that none is left without. Fields
below the root are covered by their root, except PII (traits such as e-mail and phone, and
identifiers), which comes back masked without ``read:pii``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

FORBIDDEN = "FORBIDDEN"
# What a masked PII value reads as.
MASKED = "***"


class Scope(StrEnum):
    """The scopes an API key can hold."""

    READ_CUSTOMERS = "read:customers"
    READ_PII = "read:pii"
    WRITE_EVENTS = "write:events"
    WRITE_SEGMENTS = "write:segments"
    WALLET = "wallet"
    PRIVACY = "privacy"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class Principal:
    """Who a request runs as: the API key's id (never the key itself), its name and scopes."""

    key_id: str
    name: str
    scopes: frozenset[Scope]

    def has(self, scope: Scope) -> bool:
        """Whether the key holds ``scope`` (no scope implies another, ``admin`` included)."""
        return scope in self.scopes


def principal_of(info: Info) -> Principal | None:
    """The principal of the request ``info`` belongs to; None when unauthenticated."""
    principal = info.context.get("principal")
    return principal if isinstance(principal, Principal) else None


def can_read_pii(info: Info) -> bool:
    """Whether PII may be shown unmasked to this request."""
    principal = principal_of(info)
    return principal is not None and principal.has(Scope.READ_PII)


def missing_scope_message(scope: Scope) -> str:
    """The message of a refusal, naming the scope the key lacks."""
    return f"this API key lacks the scope {scope.value}"


@cache
def needs(scope: Scope) -> type[BasePermission]:
    """The permission class of a root field that needs ``scope``; one class per scope."""

    class Needs(BasePermission):
        message = missing_scope_message(scope)

        def __init__(self) -> None:
            self.error_extensions = {"code": FORBIDDEN, "scope": scope.value}

        required = scope

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            principal = principal_of(info)
            return principal is not None and principal.has(scope)

    Needs.__name__ = Needs.__qualname__ = f"Needs_{scope.name}"
    return Needs
