"""Analysts' commands: ``fit-clv`` fits BG/NBD and Gamma-Gamma on a transactions file and
prints the parameters as JSON, so a model can be checked on one's own data before it scores
customers.

Errors are one line on stderr and exit code 2, never a traceback: the person running it has a
file to fix, not a program.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from datetime import date

from services.platform.commandline import USAGE_ERROR, CommandParser, parse_command
from services.segmentation.clv import fit_customer_value
from services.segmentation.transactions import read_transactions, summarize

PROG = "python -m services.segmentation"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _calibration_end(value: str) -> date:
    if _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"{value!r} is not a date in the form YYYY-MM-DD")


def _time_unit_days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and days > 0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of days")
    return days


def _parser() -> CommandParser:
    parser = CommandParser(prog=PROG, description="Segmentation service and analysts' commands.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    fit = commands.add_parser(
        "fit-clv",
        help="fit BG/NBD and Gamma-Gamma on a transactions file; print the parameters as JSON",
        description=(
            "Fit BG/NBD (purchases and churn) and Gamma-Gamma (spend) on the purchases up to "
            "and including the calibration end, and print the parameters as JSON."
        ),
    )
    fit.add_argument(
        "--transactions",
        required=True,
        metavar="FILE",
        help="CSV with columns customer_id,date(YYYY-MM-DD),amount, or a CDNOW-format file",
    )
    fit.add_argument(
        "--calibration-end",
        required=True,
        type=_calibration_end,
        metavar="YYYY-MM-DD",
        help="last day of the calibration period (inclusive)",
    )
    fit.add_argument(
        "--time-unit-days",
        type=_time_unit_days,
        default=7.0,
        metavar="DAYS",
        help="length of the models' time unit in days (default 7: weeks)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the command in ``argv`` (without the program name); return the exit code."""
    arguments = parse_command(_parser(), argv, PROG)
    if isinstance(arguments, int):
        return arguments
    return _fit_clv(arguments.transactions, arguments.calibration_end, arguments.time_unit_days)


def _fit_clv(path: str, calibration_end: date, time_unit_days: float) -> int:
    try:
        transactions = read_transactions(path)
    except OSError as error:
        print(f"fit-clv: error: cannot read {path}: {error.strerror or error}", file=sys.stderr)
        return USAGE_ERROR
    except ValueError as error:
        print(f"fit-clv: error: {path}: {error}", file=sys.stderr)
        return USAGE_ERROR
    summaries = summarize(transactions, calibration_end, time_unit_days)
    if not summaries:
        print(
            f"fit-clv: error: {path}: no purchases on or before {calibration_end.isoformat()}",
            file=sys.stderr,
        )
        return USAGE_ERROR
    try:
        model = fit_customer_value(summaries, time_unit_days=time_unit_days)
    except ValueError as error:
        print(f"fit-clv: error: {path}: {error}", file=sys.stderr)
        return USAGE_ERROR
    output = {"calibration_end": calibration_end.isoformat(), **model.as_dict()}
    print(json.dumps(output, indent=2))
    return 0
