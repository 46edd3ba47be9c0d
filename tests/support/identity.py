"""Building the identity service's parts for tests: keys, rules, a store on a fresh database."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from services.identity.resolution import EventIdentifiers, Resolver
from services.identity.rules import IdentityRules
from services.identity.store import IdentityStore
from services.platform.crypto import FieldCipher, generate_key, parse_key
from services.platform.mongo import Document, database
from tests.support.kafka import unique

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = {"k1": parse_key(generate_key()), "k2": parse_key(generate_key())}
INDEX_KEY = parse_key(generate_key())


def cipher(active: str = "k1") -> FieldCipher:
    """A cipher with two encryption keys and a separate index key."""
    return FieldCipher(KEYS, active, INDEX_KEY)


def key_env() -> dict[str, str]:
    """The same key material as ``LODESTAR_PII_*`` environment variables."""
    import base64

    ring = ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in KEYS.items())
    return {
        "LODESTAR_PII_KEYS": ring,
        "LODESTAR_PII_ACTIVE_KEY_ID": "k1",
        "LODESTAR_PII_INDEX_KEY": base64.b64encode(INDEX_KEY).decode(),
    }


async def fresh_store(
    client: AsyncIOMotorClient[Document], rules: IdentityRules | None = None
) -> IdentityStore:
    """An identity store on a database no other test uses."""
    store = IdentityStore(
        database(client, unique("id").replace("-", "_"), "identity"),
        cipher(),
        rules or IdentityRules.build(),
    )
    await store.ensure_indexes()
    return store


def resolver(store: IdentityStore) -> Resolver:
    """A resolver that rewrites last-seen at most once a minute."""
    return Resolver(store, store.rules, timedelta(minutes=1))


def event(
    event_id: str, *identifiers: tuple[str, str], minute: int = 0, source: str = "web"
) -> EventIdentifiers:
    """An event at ``T0 + minute``."""
    return EventIdentifiers(event_id, list(identifiers), source, T0 + timedelta(minutes=minute))


def only_test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``LODESTAR_*`` variable of the developer's shell, only the test keys: a settings
    class reads exactly what the test sets."""
    for name in list(os.environ):
        if name.upper().startswith("LODESTAR_"):
            monkeypatch.delenv(name)
    for name, value in key_env().items():
        monkeypatch.setenv(name, value)
