"""The one-shot commands' command lines: a bad one is reported in one line (exit code 2)
instead of argparse's usage block, the same way for every service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

USAGE_ERROR = 2


class UsageError(Exception):
    """A bad command line."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage block and exiting."""
        raise UsageError(message)


def fraction(value: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a share held out, say)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"{value[:20]!r} is not a fraction between 0 and 1")
    return number


def parse_command(
    parser: argparse.ArgumentParser, argv: Sequence[str], prog: str
) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code to return: 2 after a one-line error on
    stderr, 0 after ``--help``."""
    try:
        return parser.parse_args(list(argv))
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except SystemExit as exit_:  # --help prints and exits 0
        return exit_.code if isinstance(exit_.code, int) else 0
