"""MongoDB persistence of the GraphQL API keys (database ``<prefix>_gateway``).

- ``api_keys``: one document per key: ``_id`` (the key id), name, scopes, ``secret_sha256``
  (the digest of the secret, never the key), ``created_at``, ``revoked_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from gateway.keys import ApiKeys, StoredKey, parse_scopes
from gateway.keys_settings import KeyStoreSettings
from services.platform.mongo import Document, database, mongo_client

COLLECTION = "api_keys"


def _stored(doc: Document) -> StoredKey:
    return StoredKey(
        key_id=str(doc["_id"]),
        name=str(doc["name"]),
        scopes=parse_scopes(doc.get("scopes", [])),
        secret_sha256=str(doc["secret_sha256"]),
        created_at=doc["created_at"],
        revoked_at=doc.get("revoked_at"),
    )


class MongoKeyRecords:
    """The ``api_keys`` collection of the gateway's database."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.keys = db[COLLECTION]

    async def insert(self, key: StoredKey) -> None:
        """Keep a new key (its id is the document id, so a clash fails loudly)."""
        doc: dict[str, Any] = {
            "_id": key.key_id,
            "name": key.name,
            "scopes": sorted(s.value for s in key.scopes),
            "secret_sha256": key.secret_sha256,
            "created_at": key.created_at,
            "revoked_at": key.revoked_at,
        }
        await self.keys.insert_one(doc)

    async def find(self, key_id: str) -> StoredKey | None:
        """The key with this id; None when there is none."""
        doc = await self.keys.find_one({"_id": key_id})
        return None if doc is None else _stored(doc)

    async def all(self) -> list[StoredKey]:
        """Every key, oldest first."""
        return [_stored(doc) async for doc in self.keys.find({}).sort("created_at", 1)]

    async def revoke(self, key_id: str, when: datetime) -> StoredKey | None:
        """Mark the key revoked; a second revocation keeps the first time."""
        await self.keys.update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": when}}
        )
        doc = await self.keys.find_one({"_id": key_id})
        return None if doc is None else _stored(doc)


def gateway_database(
    client: AsyncIOMotorClient[Document], settings: KeyStoreSettings
) -> AsyncIOMotorDatabase[Document]:
    """The gateway's own database, ``<prefix>_gateway``."""
    return database(client, settings.mongo_database_prefix, "gateway")


def api_keys_from(settings: KeyStoreSettings) -> tuple[ApiKeys, AsyncIOMotorClient[Document]]:
    """The key store of ``settings`` and the MongoDB client it uses (the caller closes it)."""
    client = mongo_client(settings.mongo_uri, "lodestar-gateway")
    records = MongoKeyRecords(gateway_database(client, settings))
    keys = ApiKeys(records, settings.graphql_key_cache_ttl_s, settings.graphql_key_cache_size)
    return keys, client
