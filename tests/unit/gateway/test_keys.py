"""API keys: their format, what verification accepts, and the cache in front of the store
(revocation within the TTL, unknown keys not reaching the store again, a bounded size)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.keys import (
    ApiKeys,
    BadKeyNameError,
    UnknownScopeError,
    new_key,
    parse_scopes,
    secret_digest,
    split_key,
)
from gateway.scopes import ALL_SCOPES, Scope
from tests.support.keys import MemoryKeyRecords


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_prefix_id_and_a_256_bit_secret() -> None:
    key_id, key = new_key()
    prefix, found_id, secret = key.split("_", 2)
    assert (prefix, found_id) == ("lsk", key_id)
    assert len(secret) == 43  # 32 random bytes, URL-safe base64
    assert split_key(key) == (key_id, secret)
    assert new_key() != new_key()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "lsk",
        "lsk_",
        "lsk__",
        "ak_test_12345",
        "Bearer lsk_0123456789abcdef_" + "a" * 43,
        "LSK_0123456789abcdef_" + "a" * 43,
        "xsk_0123456789abcdef_" + "a" * 43,
        "lsk_0123456789ABCDEF_" + "a" * 43,
        "lsk_0123456789abcde_" + "a" * 43,
        "lsk_0123456789abcdef_" + "a" * 42,
        "lsk_0123456789abcdef_" + "a" * 44,
        "lsk_0123456789abcdef_" + "a" * 42 + "!",
        "lsk_0123456789abcdef_" + "a" * 10_000,
        "lsk_0123456789abcdef_" + "é" * 43,
        "lsk_0123456789abcdef\x00" + "a" * 43,
    ],
)
def test_anything_but_a_well_formed_key_is_not_split(token: str) -> None:
    assert split_key(token) is None


def test_scopes_are_parsed_and_an_unknown_one_is_named_with_the_valid_ones() -> None:
    assert parse_scopes(["read:customers", "admin"]) == {Scope.READ_CUSTOMERS, Scope.ADMIN}
    with pytest.raises(UnknownScopeError) as error:
        parse_scopes(["read:customers", "write:everything"])
    message = str(error.value)
    assert "'write:everything'" in message
    assert all(scope.value in message for scope in Scope)
    long = "x" * 5_000
    with pytest.raises(UnknownScopeError) as error:
        parse_scopes([long])
    assert len(str(error.value)) < 300


async def test_verify_accepts_the_key_and_nothing_near_it() -> None:
    records = MemoryKeyRecords()
    keys = ApiKeys(records)
    key, stored = await keys.create("shop frontend", [Scope.READ_CUSTOMERS])
    principal = await keys.verify(key)
    assert principal is not None
    assert principal.key_id == stored.key_id
    assert principal.name == "shop frontend"
    assert principal.scopes == {Scope.READ_CUSTOMERS}
    key_id, secret = key.split("_", 2)[1:]
    other_secret = ("b" if secret[0] == "a" else "a") + secret[1:]
    assert await keys.verify(f"lsk_{key_id}_{other_secret}") is None
    assert await keys.verify(None) is None
    assert await keys.verify("") is None
    assert await keys.verify(key + "a") is None
    # Only the digest is kept.
    assert stored.secret_sha256 == secret_digest(secret)
    assert key not in repr(records.keys)
    assert secret not in repr(records.keys)


async def test_a_key_name_is_checked() -> None:
    keys = ApiKeys(MemoryKeyRecords())
    for name in ("", "   ", "n" * 101):
        with pytest.raises(BadKeyNameError):
            await keys.create(name, ALL_SCOPES)


async def test_a_revoked_key_stops_at_once_here_and_within_the_ttl_elsewhere() -> None:
    records = MemoryKeyRecords()
    clock = Clock()
    here = ApiKeys(records, ttl_s=5, clock=clock)
    elsewhere = ApiKeys(records, ttl_s=5, clock=clock)  # another replica, same store
    key, stored = await here.create("k", ALL_SCOPES)
    assert await here.verify(key) is not None
    assert await elsewhere.verify(key) is not None
    revoked = await here.revoke(stored.key_id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await here.verify(key) is None
    # The other replica answers from its cache until the TTL ends, then asks the store.
    assert await elsewhere.verify(key) is not None
    clock.now += 5.01
    assert await elsewhere.verify(key) is None


async def test_revoking_an_unknown_key_is_none() -> None:
    assert await ApiKeys(MemoryKeyRecords()).revoke("0123456789abcdef") is None


async def test_unknown_and_malformed_keys_do_not_hammer_the_store() -> None:
    records = MemoryKeyRecords()
    clock = Clock()
    keys = ApiKeys(records, ttl_s=5, clock=clock)
    unknown = "lsk_0123456789abcdef_" + "a" * 43
    for _ in range(100):
        assert await keys.verify(unknown) is None
        assert await keys.verify("not-a-key") is None
    assert records.finds == 1
    # Concurrent lookups of one id share one store call.
    other = "lsk_fedcba9876543210_" + "a" * 43
    assert await asyncio.gather(*(keys.verify(other) for _ in range(50))) == [None] * 50
    assert records.finds == 2
    clock.now += 6
    assert await keys.verify(unknown) is None
    assert records.finds == 3


async def test_made_up_key_ids_reach_the_store_a_few_at_a_time() -> None:
    class Slow(MemoryKeyRecords):
        def __init__(self) -> None:
            super().__init__()
            self.now = self.most = 0
            self.release = asyncio.Event()

        async def find(self, key_id: str) -> None:
            self.now += 1
            self.most = max(self.most, self.now)
            await self.release.wait()
            self.now -= 1

    records = Slow()
    keys = ApiKeys(records, max_lookups=4)
    flood = [asyncio.create_task(keys.verify(f"lsk_{n:016x}_" + "a" * 43)) for n in range(100)]
    # Let every task run as far as it can (each step of the loop is one scheduling round).
    for _ in range(50):
        await asyncio.sleep(0)
    assert records.most == 4
    records.release.set()
    assert await asyncio.gather(*flood) == [None] * 100
    assert records.most == 4


async def test_the_cache_is_bounded() -> None:
    keys = ApiKeys(MemoryKeyRecords(), ttl_s=60, max_cached=100)
    for n in range(1_000):
        await keys.verify(f"lsk_{n:016x}_" + "a" * 43)
    assert len(keys._cache) == 100


async def test_a_store_failure_is_raised_not_taken_for_an_unknown_key() -> None:
    class Down(MemoryKeyRecords):
        async def find(self, key_id: str) -> None:
            raise ConnectionError("store down")

    keys = ApiKeys(Down())
    with pytest.raises(ConnectionError):
        await keys.verify("lsk_0123456789abcdef_" + "a" * 43)
    # Nothing was remembered: the next request asks again.
    assert keys._cache == {}
