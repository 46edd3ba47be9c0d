"""Order histories for the predictive models: transactions read from an analyst's file, and
the per-customer summary (frequency, recency, age, spend) that BG/NBD and Gamma-Gamma fit on.

Two file formats are accepted, so analysts can run the fit on their own exports and on the
published CDNOW data alike:

- CSV with a header naming ``customer_id``, ``date`` (``YYYY-MM-DD``) and ``amount``; other
  columns are ignored.
- CDNOW's whitespace-separated format: ``customer_id date(YYYYMMDD) quantity amount`` (the
  master file, with an optional header line), or with a second id column before the date
  (the 2,357-customer sample file). The first column is the customer.

Bad input raises ``ValueError`` naming the line and the column, so a 100,000-line export can be
fixed without guessing.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

CSV_COLUMNS = ("customer_id", "date", "amount")
CDNOW_MASTER_COLUMNS = ("customer_id", "date", "quantity", "amount")
CDNOW_SAMPLE_COLUMNS = ("customer_id", "customer_index", "date", "quantity", "amount")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CDNOW_DATE = re.compile(r"\d{8}")
_INTEGER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Transaction:
    """One purchase: who, which day, how much (in the file's currency units)."""

    customer_id: str
    day: date
    amount: float


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """A customer's history at the end of the calibration period, in the models' terms.

    ``frequency`` counts repeat purchase days (the first purchase only starts the clock),
    ``recency`` and ``T`` are the ages of the last purchase and of the end of the period,
    both measured from the first purchase in time units, and ``monetary`` is the mean spend of
    the repeat purchase days (0 without repeats), which is what Gamma-Gamma models.
    """

    customer_id: str
    frequency: int
    recency: float
    T: float
    monetary: float


class _LineError(ValueError):
    """A problem in one line of the file: the message names the line and the column."""

    def __init__(self, line: int, column: str | None, problem: str) -> None:
        where = f"line {line}" if column is None else f"line {line}, column {column}"
        super().__init__(f"{where}: {problem}")


def read_transactions(path: str | Path) -> list[Transaction]:
    """Read a transactions file in either accepted format.

    Raises ``OSError`` when the file cannot be read and ``ValueError`` when its content is bad.
    """
    with Path(path).open(encoding="utf-8-sig", newline="") as file:
        return parse_transactions(file)


def parse_transactions(lines: Iterable[str]) -> list[Transaction]:
    """Parse lines of a transactions file, choosing the format from its first non-blank line:
    a comma means CSV, anything else the CDNOW whitespace format."""
    lines = list(lines)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise ValueError("the file has no transactions")
    if "," in first:
        return _parse_csv(lines)
    return _parse_cdnow(lines)


def _parse_csv(lines: Sequence[str]) -> list[Transaction]:
    reader = csv.reader(lines)
    header: list[str] | None = None
    positions: dict[str, int] = {}
    transactions: list[Transaction] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            missing = [name for name in CSV_COLUMNS if name not in header]
            if missing:
                raise _LineError(
                    line,
                    None,
                    f"the header must name the columns {', '.join(CSV_COLUMNS)} "
                    f"(missing {', '.join(missing)})",
                )
            positions = {name: header.index(name) for name in CSV_COLUMNS}
            continue
        if len(row) != len(header):
            raise _LineError(line, None, f"expected {len(header)} columns, got {len(row)}")
        cells = {name: row[index].strip() for name, index in positions.items()}
        transactions.append(
            Transaction(
                _customer(line, cells["customer_id"]),
                _iso_date(line, cells["date"]),
                _amount(line, cells["amount"]),
            )
        )
    if not transactions:
        raise ValueError("the file has a header but no transactions")
    return transactions


def _parse_cdnow(lines: Sequence[str]) -> list[Transaction]:
    columns: tuple[str, ...] | None = None
    first_line = True
    transactions: list[Transaction] = []
    for line, text in enumerate(lines, start=1):
        fields = text.split()
        if not fields:
            continue
        # The master file starts with a header line; data lines start with a numeric id.
        is_header = first_line and not fields[0].isdigit()
        first_line = False
        if is_header:
            continue
        if columns is None:
            columns = _cdnow_columns(line, len(fields))
        if len(fields) != len(columns):
            raise _LineError(
                line,
                None,
                f"expected {len(columns)} whitespace-separated columns, got {len(fields)}",
            )
        cells = dict(zip(columns, fields, strict=True))
        if not _INTEGER.fullmatch(cells["quantity"]):
            raise _LineError(
                line, "quantity", f"{cells['quantity']!r} is not a whole number of items"
            )
        transactions.append(
            Transaction(
                _customer(line, cells["customer_id"]),
                _cdnow_date(line, cells["date"]),
                _amount(line, cells["amount"]),
            )
        )
    if not transactions:
        raise ValueError("the file has no transactions")
    return transactions


def _cdnow_columns(line: int, count: int) -> tuple[str, ...]:
    if count == len(CDNOW_MASTER_COLUMNS):
        return CDNOW_MASTER_COLUMNS
    if count == len(CDNOW_SAMPLE_COLUMNS):
        return CDNOW_SAMPLE_COLUMNS
    raise _LineError(
        line,
        None,
        f"expected CSV with a header ({', '.join(CSV_COLUMNS)}) or CDNOW's whitespace-"
        f"separated format with {len(CDNOW_MASTER_COLUMNS)} or {len(CDNOW_SAMPLE_COLUMNS)} "
        f"columns, got {count} columns",
    )


def _customer(line: int, value: str) -> str:
    if not value:
        raise _LineError(line, "customer_id", "is empty")
    return value


def _iso_date(line: int, value: str) -> date:
    if _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _LineError(line, "date", f"{value!r} is not a date in the form YYYY-MM-DD")


def _cdnow_date(line: int, value: str) -> date:
    if _CDNOW_DATE.fullmatch(value):
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            pass
    raise _LineError(line, "date", f"{value!r} is not a date in the form YYYYMMDD")


def _amount(line: int, value: str) -> float:
    try:
        amount = float(value)
    except ValueError:
        raise _LineError(line, "amount", f"{value!r} is not a number") from None
    if not math.isfinite(amount):
        raise _LineError(line, "amount", f"{value!r} is not a finite number")
    # Refunds are netted before modelling: a negative spend has no meaning in Gamma-Gamma.
    if amount < 0:
        raise _LineError(line, "amount", f"{value!r} is negative")
    return amount


def summarize(
    transactions: Iterable[Transaction], calibration_end: date, time_unit_days: float = 7.0
) -> list[CustomerSummary]:
    """Summarize each customer's purchases up to and including ``calibration_end``.

    Purchases on the same day count as one purchase of their summed amount, because the models
    describe buying occasions, not order lines. Customers whose first purchase falls after
    ``calibration_end`` are left out. The result is sorted by customer id.
    """
    if not (math.isfinite(time_unit_days) and time_unit_days > 0):
        raise ValueError(f"time_unit_days must be a positive number, got {time_unit_days}")
    spend_by_day: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for transaction in transactions:
        if transaction.day <= calibration_end:
            spend_by_day[transaction.customer_id][transaction.day] += transaction.amount
    summaries = []
    for customer_id in sorted(spend_by_day):
        days = sorted(spend_by_day[customer_id])
        first, last = days[0], days[-1]
        repeats = [spend_by_day[customer_id][day] for day in days[1:]]
        summaries.append(
            CustomerSummary(
                customer_id=customer_id,
                frequency=len(repeats),
                recency=(last - first).days / time_unit_days,
                T=(calibration_end - first).days / time_unit_days,
                monetary=sum(repeats) / len(repeats) if repeats else 0.0,
            )
        )
    return summaries
