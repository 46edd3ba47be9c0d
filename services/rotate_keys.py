"""``python -m services.rotate_keys [--check]``: PII key rotation for the whole platform.

Every service that keeps PII under the key ring (``LODESTAR_PII_*``) re-encrypts, in its own
store, each value still under an old key with the active key: identity (e-mail and phone
identifiers, which also move to their current blind index when the index key changed) and
profile (PII traits, timeline entries, privacy-request exports). Then each counts what is
left. It prints one JSON line per service and collection, then a summary line saying whether
the old keys may be dropped; ``--check`` only counts. Running it again after an interruption
finishes the job; a run with nothing to do changes nothing.

Exit status: 0 when nothing is left under an old key and everything is readable, 1 while
anything is left or unreadable (or MongoDB failed: run it again), 2 for a bad command line or
configuration.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from pymongo.errors import PyMongoError

from services.identity import server as identity
from services.identity.settings import IdentitySettings
from services.platform.commandline import CommandParser, parse_command
from services.platform.logs import configure_logging
from services.platform.rotation import Tally, summary
from services.platform.settings import load_settings
from services.profile import server as profile
from services.profile.settings import ProfileSettings

PROG = "python -m services.rotate_keys"
LEFT = 1


def _parser(prog: str) -> CommandParser:
    parser = CommandParser(
        prog=prog,
        description="Re-encrypt every service's PII under LODESTAR_PII_ACTIVE_KEY_ID and "
        "report, per service, what is left under old keys.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only count what is left; change nothing"
    )
    return parser


def _print(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def rotate(
    identity_settings: IdentitySettings, profile_settings: ProfileSettings, *, check_only: bool
) -> list[Tally]:
    """Every service's rotation in turn; each service's lines are printed once it is done."""
    done = await identity.rotate_keys(identity_settings, check_only=check_only)
    _print_all(done)
    later = await profile.rotate_keys(profile_settings, check_only=check_only)
    _print_all(later)
    return done + later


def _print_all(tallies: list[Tally]) -> None:
    for tally in tallies:
        _print(tally.to_json())


def main(argv: Sequence[str], prog: str = PROG) -> int:
    """Run the command line ``argv``; returns the exit status."""
    parsed = parse_command(_parser(prog), argv, prog)
    if isinstance(parsed, int):
        return parsed
    identity_settings = load_settings(IdentitySettings)
    profile_settings = load_settings(ProfileSettings)
    configure_logging("rotate-keys", identity_settings.log_level)
    try:
        tallies = asyncio.run(rotate(identity_settings, profile_settings, check_only=parsed.check))
    except PyMongoError as exc:
        # Every write is checked against what it replaces: nothing is lost, a new run resumes.
        print(
            f"{prog}: error: MongoDB failed ({type(exc).__name__}); run the command again",
            file=sys.stderr,
        )
        return LEFT
    report = summary(tallies, identity_settings.field_cipher(), check_only=parsed.check)
    _print(report)
    return 0 if report["left"] == 0 and report["unreadable"] == 0 else LEFT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
