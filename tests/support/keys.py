"""API keys for tests of the gateway's HTTP layer that run without MongoDB (the app without
its lifespan): the key store's records kept in a dict. The MongoDB records themselves are
tested against a real server in tests/integration/test_gateway_keys.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import create_app
from gateway.graphql_http import PRINCIPAL
from gateway.keys import ApiKeys, StoredKey, new_key, secret_digest
from gateway.scopes import ALL_SCOPES, Principal
from gateway.scopes import Scope as ApiScope
from gateway.settings import GatewaySettings


class MemoryKeyRecords:
    """Key records in a dict, counting the lookups that reach them."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}
        self.finds = 0

    async def insert(self, key: StoredKey) -> None:
        """Keep a new key."""
        self.keys[key.key_id] = key

    async def find(self, key_id: str) -> StoredKey | None:
        """The key with this id."""
        self.finds += 1
        return self.keys.get(key_id)

    async def all(self) -> list[StoredKey]:
        """Every key, oldest first."""
        return sorted(self.keys.values(), key=lambda k: k.created_at)

    async def revoke(self, key_id: str, when: datetime) -> StoredKey | None:
        """Mark a key revoked."""
        key = self.keys.get(key_id)
        if key is None:
            return None
        if key.revoked_at is None:
            key = self.keys[key_id] = replace(key, revoked_at=when)
        return key

    def add(self, scopes: Iterable[ApiScope] = ALL_SCOPES, name: str = "test key") -> str:
        """A new key with ``scopes``, kept at once (no event loop needed); the key itself."""
        key_id, token = new_key()
        self.keys[key_id] = StoredKey(
            key_id=key_id,
            name=name,
            scopes=frozenset(scopes),
            secret_sha256=secret_digest(token.split("_", 2)[2]),
            created_at=datetime.now(UTC),
        )
        return token


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


def app_with_key(
    settings: GatewaySettings, scopes: Iterable[ApiScope] = ALL_SCOPES
) -> tuple[Starlette, dict[str, str]]:
    """The gateway app with an in-memory key store holding one key with ``scopes``, and the
    header that sends it."""
    records = MemoryKeyRecords()
    key = records.add(scopes)
    app = create_app(settings, ApiKeys(records, ttl_s=settings.graphql_key_cache_ttl_s))
    return app, bearer(key)


# One store and one key with every scope shared by the HTTP tests that only need "a valid
# key" (records are only read, and each app gets its own cache and rate limiter).
SHARED_RECORDS = MemoryKeyRecords()
SHARED_KEY = SHARED_RECORDS.add(name="shared test key")
SHARED_BEARER = bearer(SHARED_KEY)


def keyed_app(settings: GatewaySettings) -> Starlette:
    """The gateway app whose key store holds :data:`SHARED_KEY`."""
    return create_app(settings, ApiKeys(SHARED_RECORDS, ttl_s=settings.graphql_key_cache_ttl_s))


def as_principal(app: ASGIApp, principal: Principal | None = None) -> ASGIApp:
    """``app`` (the GraphQL view without its door) with ``principal`` (by default one holding
    every scope) authenticated on each request, as the door would put it there."""
    who = principal or Principal(key_id="test", name="test key", scopes=ALL_SCOPES)

    async def authenticated(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, PRINCIPAL: who}, receive, send)

    return authenticated
