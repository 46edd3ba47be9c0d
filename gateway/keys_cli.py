"""``python -m gateway keys``: create, list and revoke GraphQL API keys in the gateway's
database (``LODESTAR_MONGO_URI``, ``LODESTAR_MONGO_DATABASE_PREFIX``).

- ``keys create --name NAME --scope read:customers [--scope ...]`` prints the key once;
- ``keys list`` prints id, name, scopes, created and revoked (never a secret);
- ``keys revoke KEY_ID``.

A bad command line (an unknown scope among them) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime

from gateway.keys import (
    ApiKeys,
    BadKeyNameError,
    StoredKey,
    UnknownScopeError,
    check_name,
    parse_scopes,
)
from gateway.keys_settings import KeyStoreSettings
from gateway.keys_store import api_keys_from
from gateway.scopes import Scope
from services.platform.commandline import USAGE_ERROR, CommandParser, parse_command
from services.platform.settings import load_settings

PROG = "python -m gateway keys"
NOT_FOUND = 1


def _parser() -> CommandParser:
    parser = CommandParser(prog=PROG, description="GraphQL API keys of the gateway.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        help=f"a scope the key holds (repeat): {', '.join(s.value for s in Scope)}",
    )
    commands.add_parser("list", help="list the keys (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(key: StoredKey) -> str:
    scopes = ",".join(sorted(s.value for s in key.scopes))
    return f"{key.key_id}  {key.name}  {scopes}  {_when(key.created_at)}  {_when(key.revoked_at)}"


async def _run(args: argparse.Namespace, keys: ApiKeys) -> int:
    if args.command == "create":
        token, stored = await keys.create(args.name, parse_scopes(args.scopes))
        print(f"key id: {stored.key_id}")
        print(f"key:    {token}")
        print("The key is shown this once; keep it in a secret store.", file=sys.stderr)
        return 0
    if args.command == "list":
        print("id  name  scopes  created  revoked")
        for key in await keys.list():
            print(_row(key))
        return 0
    revoked = await keys.revoke(args.key_id)
    if revoked is None:
        print(f"{PROG}: no key with id {args.key_id[:40]!r}", file=sys.stderr)
        return NOT_FOUND
    print(f"revoked {revoked.key_id} at {_when(revoked.revoked_at)}")
    return 0


async def _main(args: argparse.Namespace, settings: KeyStoreSettings) -> int:
    keys, client = api_keys_from(settings)
    try:
        return await _run(args, keys)
    finally:
        client.close()


def main(argv: Sequence[str]) -> int:
    """Run one ``keys`` command; the exit code."""
    args = parse_command(_parser(), argv, PROG)
    if isinstance(args, int):
        return args
    if args.command == "create":
        try:
            parse_scopes(args.scopes)
            args.name = check_name(args.name)
        except (UnknownScopeError, BadKeyNameError) as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return USAGE_ERROR
    return asyncio.run(_main(args, load_settings(KeyStoreSettings)))
