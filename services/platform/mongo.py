"""MongoDB access for the stores: one client factory and the index bootstrap they declare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from services.platform.dbops import DB_OPERATIONS

Document = dict[str, Any]


@dataclass(frozen=True)
class IndexSpec:
    """An index a store needs; created at start-up, idempotently."""

    collection: str
    keys: Sequence[tuple[str, int]]
    unique: bool = False
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


# A reply that has not come within this long fails the operation (its caller retries or
# redelivers) instead of holding a consumer for ever; a URI naming socketTimeoutMS wins.
SOCKET_TIMEOUT_MS = 120_000


def mongo_client(uri: str, app_name: str) -> AsyncIOMotorClient[Document]:
    """A motor client with bounded timeouts so a dead or stalled server surfaces as an error;
    its commands are counted by the process's :data:`DB_OPERATIONS` (exported on /metrics)."""
    options: dict[str, Any] = {}
    if "sockettimeoutms=" not in uri.lower():
        options["socketTimeoutMS"] = SOCKET_TIMEOUT_MS
    return AsyncIOMotorClient(
        uri,
        appname=app_name,
        event_listeners=[DB_OPERATIONS],
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        tz_aware=True,
        **options,
    )


def database(
    client: AsyncIOMotorClient[Document], prefix: str, service: str
) -> AsyncIOMotorDatabase[Document]:
    """The database a service owns: ``<prefix>_<service>``."""
    return client[f"{prefix}_{service}"]


async def ensure_indexes(db: AsyncIOMotorDatabase[Document], specs: Sequence[IndexSpec]) -> None:
    """Create every declared index (a no-op when it already exists)."""
    for spec in specs:
        kwargs: dict[str, Any] = {"unique": spec.unique, **spec.options}
        if spec.name:
            kwargs["name"] = spec.name
        await db[spec.collection].create_index(list(spec.keys), **kwargs)
