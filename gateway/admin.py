"""GraphQL administration of the API keys: list, create (the clear key is in that one
response only) and revoke. Every field needs the ``admin`` scope."""

from __future__ import annotations

import logging
from datetime import datetime

import strawberry
from strawberry.types import Info

from gateway.errors import BAD_USER_INPUT, client_error
from gateway.keys import ApiKeys, BadKeyNameError, StoredKey, UnknownScopeError, parse_scopes
from gateway.scopes import Scope, needs, principal_of

log = logging.getLogger(__name__)
# What the key list answers at most; far more keys than an installation has.
MAX_KEYS_LISTED = 1_000


@strawberry.type(description="An API key as kept: never its secret.")
class ApiKey:
    id: strawberry.ID
    name: str
    scopes: list[str] = strawberry.field(description="e.g. read:customers, read:pii, admin.")
    created_at: datetime
    revoked_at: datetime | None

    @staticmethod
    def of(key: StoredKey) -> ApiKey:
        return ApiKey(
            id=strawberry.ID(key.key_id),
            name=key.name,
            scopes=sorted(s.value for s in key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


@strawberry.type(description="A new API key: `key` is shown here once and never again.")
class CreatedApiKey:
    key: str = strawberry.field(description="The key to send as Authorization: Bearer <key>.")
    api_key: ApiKey


def _keys(info: Info) -> ApiKeys:
    keys: ApiKeys = info.context["keys"]
    return keys


def _who(info: Info) -> str:
    principal = principal_of(info)
    return principal.key_id if principal is not None else "-"


@strawberry.type
class AdminQuery:
    @strawberry.field(
        description="Every API key, revoked ones included, oldest first (never a secret).",
        permission_classes=[needs(Scope.ADMIN)],
    )
    async def api_keys(self, info: Info) -> list[ApiKey]:
        return [ApiKey.of(key) for key in (await _keys(info).list())[:MAX_KEYS_LISTED]]


@strawberry.type
class AdminMutation:
    @strawberry.mutation(
        description="Create an API key with these scopes; the key is in this answer only.",
        permission_classes=[needs(Scope.ADMIN)],
    )
    async def create_api_key(self, info: Info, name: str, scopes: list[str]) -> CreatedApiKey:
        try:
            wanted = parse_scopes(scopes)
            token, stored = await _keys(info).create(name, wanted)
        except (UnknownScopeError, BadKeyNameError) as error:
            raise client_error(str(error), BAD_USER_INPUT) from None
        log.info(
            "api key created",
            extra={"fields": {"key_id": stored.key_id, "by": _who(info)}},
        )
        return CreatedApiKey(key=token, api_key=ApiKey.of(stored))

    @strawberry.mutation(
        description="Revoke an API key: refused by every gateway within the key cache TTL "
        "(seconds). Null when there is no such key.",
        permission_classes=[needs(Scope.ADMIN)],
    )
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        revoked = await _keys(info).revoke(str(id)[:64])
        if revoked is not None:
            log.info(
                "api key revoked", extra={"fields": {"key_id": revoked.key_id, "by": _who(info)}}
            )
        return None if revoked is None else ApiKey.of(revoked)
