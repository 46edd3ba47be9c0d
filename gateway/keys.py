"""GraphQL API keys: their format, how they are kept (only a digest of the secret), and the
verification every request goes through, with a short-lived cache in front of the store.

A key reads ``lsk_<key id>_<secret>``. The key id is public (logs, ``keys list``, revocation);
the secret is 256 random bits shown once, at creation, and kept only as its SHA-256 digest
(a plain digest suffices: the secret is random, not a password that could be guessed).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from gateway.scopes import Principal, Scope

KEY_PREFIX = "lsk"
# 8 random bytes as hex: short enough to read out, unique enough never to collide in practice.
_KEY_ID = re.compile(r"[0-9a-f]{16}")
# token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
SECRET_BYTES = 32
# Longest Authorization token even looked at; a real key is 64 characters.
MAX_TOKEN_CHARS = 128
MAX_NAME_CHARS = 100


class UnknownScopeError(ValueError):
    """A scope name that is not one of :class:`Scope`; the message names it and the valid ones."""

    def __init__(self, name: str) -> None:
        shown = name if len(name) <= 40 else name[:39] + "…"
        valid = ", ".join(s.value for s in Scope)
        super().__init__(f"unknown scope {shown!r}; valid scopes: {valid}")


class BadKeyNameError(ValueError):
    """A key name that is empty or too long."""


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """The scopes ``names`` stand for; raises :class:`UnknownScopeError` on the first unknown."""
    scopes = set()
    for name in names:
        try:
            scopes.add(Scope(name))
        except ValueError:
            raise UnknownScopeError(name) from None
    return frozenset(scopes)


def check_name(name: str) -> str:
    """A key's name, trimmed: 1 to 100 characters."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise BadKeyNameError(f"a key name is 1 to {MAX_NAME_CHARS} characters")
    return name


def secret_digest(secret: str) -> str:
    """What is stored of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key id and the full key ``lsk_<id>_<secret>``."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def split_key(token: str) -> tuple[str, str] | None:
    """The key id and secret of a well-formed key; None for anything else (no lookup is
    spent on a token that cannot be a key)."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not _KEY_ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return key_id, secret


@dataclass(frozen=True)
class StoredKey:
    """An API key as kept at rest: never the key itself, only the digest of its secret."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    secret_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def principal(self) -> Principal:
        """Who a request with this key runs as."""
        return Principal(key_id=self.key_id, name=self.name, scopes=self.scopes)


class KeyRecords(Protocol):
    """Where keys are kept (MongoDB in :mod:`gateway.keys_store`)."""

    async def insert(self, key: StoredKey) -> None:
        """Keep a new key."""

    async def find(self, key_id: str) -> StoredKey | None:
        """The key with this id, revoked or not; None when there is none."""

    async def all(self) -> list[StoredKey]:
        """Every key, oldest first."""

    async def revoke(self, key_id: str, when: datetime) -> StoredKey | None:
        """Mark the key revoked (keeping the first revocation time); None when unknown."""


class ApiKeys:
    """Creates, lists, revokes and verifies keys.

    ``verify`` remembers what the store said about a key id (found or not) for ``ttl_s``
    seconds, for at most ``max_cached`` ids: a revoked key stops working within ``ttl_s`` on
    every replica, and repeated unknown keys do not reach the store again. Made-up key ids
    that are all different reach the store at most ``max_lookups`` at a time.
    """

    def __init__(
        self,
        records: KeyRecords,
        ttl_s: float = 5.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        max_lookups: int = 16,
    ) -> None:
        self.records = records
        self.ttl_s = ttl_s
        self.max_cached = max_cached
        self.clock = clock
        # key id -> (when the entry expires, the stored key or None when there is none)
        self._cache: OrderedDict[str, tuple[float, StoredKey | None]] = OrderedDict()
        # One store lookup per key id at a time; concurrent requests wait for it.
        self._pending: dict[str, asyncio.Future[StoredKey | None]] = {}
        self._lookups = asyncio.Semaphore(max_lookups)

    async def create(self, name: str, scopes: Iterable[Scope]) -> tuple[str, StoredKey]:
        """A new key: the full key (shown once, never kept) and what is stored of it."""
        key_id, token = new_key()
        secret = token.split("_", 2)[2]
        stored = StoredKey(
            key_id=key_id,
            name=check_name(name),
            scopes=frozenset(scopes),
            secret_sha256=secret_digest(secret),
            created_at=datetime.now(UTC),
        )
        await self.records.insert(stored)
        return token, stored

    async def list(self) -> list[StoredKey]:
        """Every key, revoked ones included, oldest first."""
        return await self.records.all()

    async def revoke(self, key_id: str) -> StoredKey | None:
        """Revoke a key (at once here; other replicas within the cache TTL)."""
        revoked = await self.records.revoke(key_id, datetime.now(UTC))
        self._cache.pop(key_id, None)
        return revoked

    async def verify(self, token: str | None) -> Principal | None:
        """Who ``token`` authenticates, or None for a missing, malformed, unknown, wrong or
        revoked key. Raises when the store cannot be reached."""
        parts = split_key(token) if token else None
        if parts is None:
            return None
        key_id, secret = parts
        stored = await self._stored(key_id)
        # Compared in constant time, and even when the key is unknown or revoked.
        expected = stored.secret_sha256 if stored is not None else "0" * 64
        matches = hmac.compare_digest(secret_digest(secret), expected)
        if stored is None or not matches or stored.revoked_at is not None:
            return None
        return stored.principal

    async def _stored(self, key_id: str) -> StoredKey | None:
        now = self.clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._pending.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[StoredKey | None] = asyncio.get_running_loop().create_future()
        self._pending[key_id] = future
        try:
            async with self._lookups:
                stored = await self.records.find(key_id)
        except BaseException as error:
            future.set_exception(error)
            # Retrieved here so an unawaited failure is not reported as never retrieved.
            future.exception()
            raise
        finally:
            del self._pending[key_id]
        future.set_result(stored)
        self._remember(key_id, stored, now)
        return stored

    def _remember(self, key_id: str, stored: StoredKey | None, now: float) -> None:
        if self.ttl_s <= 0:
            return
        self._cache[key_id] = (now + self.ttl_s, stored)
        self._cache.move_to_end(key_id)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
