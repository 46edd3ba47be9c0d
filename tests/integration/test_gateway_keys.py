"""The GraphQL API keys in MongoDB (``<prefix>_gateway.api_keys``) and ``python -m gateway
keys``: no clear key at rest, revocation, and the command line, against SecantusDB."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from gateway import keys_cli
from gateway.keys import ApiKeys, split_key
from gateway.keys_settings import KeyStoreSettings
from gateway.keys_store import COLLECTION, MongoKeyRecords, api_keys_from
from gateway.scopes import Scope
from infra.local.servers import MongoWireServer
from services.platform.mongo import Document

ROOT = Path(__file__).resolve().parents[2]


def fresh_prefix() -> str:
    return f"t{secrets.token_hex(4)}"


async def test_only_a_digest_of_the_secret_is_at_rest(
    client: AsyncIOMotorClient[Document],
) -> None:
    prefix = fresh_prefix()
    db = client[f"{prefix}_gateway"]
    keys = ApiKeys(MongoKeyRecords(db))
    key, stored = await keys.create("shop", [Scope.READ_CUSTOMERS, Scope.WALLET])
    _, secret = key.split("_", 2)[1:]
    docs = [doc async for doc in db[COLLECTION].find({})]
    assert len(docs) == 1
    [doc] = docs
    assert doc["_id"] == stored.key_id
    assert set(doc) == {"_id", "name", "scopes", "secret_sha256", "created_at", "revoked_at"}
    assert doc["scopes"] == ["read:customers", "wallet"]
    raw = repr(docs)
    assert key not in raw
    assert secret not in raw
    assert secret[:16] not in raw
    principal = await keys.verify(key)
    assert principal is not None
    assert principal.scopes == {Scope.READ_CUSTOMERS, Scope.WALLET}


async def test_revocation_is_kept_and_a_second_one_keeps_the_first_time(
    client: AsyncIOMotorClient[Document],
) -> None:
    db = client[f"{fresh_prefix()}_gateway"]
    records = MongoKeyRecords(db)
    keys = ApiKeys(records, ttl_s=0)
    key, stored = await keys.create("k", [Scope.ADMIN])
    first = await keys.revoke(stored.key_id)
    assert first is not None
    assert first.revoked_at is not None
    second = await keys.revoke(stored.key_id)
    assert second is not None
    assert second.revoked_at == first.revoked_at
    assert await keys.verify(key) is None
    # Another replica (its own cache) refuses it too.
    assert await ApiKeys(MongoKeyRecords(db), ttl_s=0).verify(key) is None
    assert await keys.revoke("0123456789abcdef") is None
    listed = await keys.list()
    assert [k.key_id for k in listed] == [stored.key_id]


def cli(mongo: MongoWireServer, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LODESTAR_")}
    env.update(
        {
            "LODESTAR_MONGO_URI": mongo.uri,
            "LODESTAR_MONGO_DATABASE_PREFIX": prefix,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")]),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


async def test_the_command_line_creates_lists_and_revokes(mongo_server: MongoWireServer) -> None:
    prefix = fresh_prefix()
    created = cli(
        mongo_server,
        prefix,
        "keys",
        "create",
        "--name",
        "crm sync",
        "--scope",
        "read:customers",
        "--scope",
        "read:pii",
    )
    assert created.returncode == 0, created.stderr
    [key] = [line.split()[-1] for line in created.stdout.splitlines() if line.startswith("key:")]
    parts = split_key(key)
    assert parts is not None
    key_id, secret = parts
    assert f"key id: {key_id}" in created.stdout

    settings = KeyStoreSettings(mongo_uri=mongo_server.uri, mongo_database_prefix=prefix)
    keys, client = api_keys_from(settings)
    try:
        principal = await keys.verify(key)
        assert principal is not None
        assert principal.scopes == {Scope.READ_CUSTOMERS, Scope.READ_PII}
        assert principal.name == "crm sync"

        listed = cli(mongo_server, prefix, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert key_id in listed.stdout
        assert "crm sync" in listed.stdout
        assert "read:customers,read:pii" in listed.stdout
        assert key not in listed.stdout
        assert secret not in listed.stdout + listed.stderr

        revoked = cli(mongo_server, prefix, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert await ApiKeys(keys.records, ttl_s=0).verify(key) is None
        listed = cli(mongo_server, prefix, "keys", "list")
        row = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
        assert row.split()[-1] != "-"  # the revocation time

        unknown = cli(mongo_server, prefix, "keys", "revoke", "0123456789abcdef")
        assert unknown.returncode == 1
        assert "no key" in unknown.stderr
    finally:
        client.close()


def test_an_unknown_scope_is_refused_naming_it_and_the_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Refused before the store is opened: no LODESTAR_MONGO_URI is needed for it.
    args = ["create", "--name", "n", "--scope", "read:customers", "--scope", "delete:everything"]
    assert keys_cli.main(args) == 2
    out, err = capsys.readouterr()
    assert "delete:everything" in err
    for scope in Scope:
        assert scope.value in err
    assert "lsk_" not in out
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["create", "--scope", "admin"],
        ["create", "--name", "n"],
        ["create", "--name", " ", "--scope", "admin"],
        ["create", "--name", "n" * 101, "--scope", "admin"],
        ["create", "--name", "n", "--scope", "x" * 10_000],
        ["nope"],
    ],
)
def test_bad_command_lines_exit_2_in_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert keys_cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert len(err) < 400
