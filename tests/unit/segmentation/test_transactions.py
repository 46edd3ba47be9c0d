"""Transactions files (CSV and CDNOW formats) and the per-customer summaries the models fit
on, down to the published CDNOW calibration summary."""

from __future__ import annotations

import csv
import re
from datetime import date
from pathlib import Path

import pytest

from services.segmentation.transactions import (
    CustomerSummary,
    Transaction,
    parse_transactions,
    read_transactions,
    summarize,
)


def test_csv_with_columns_in_any_order_and_extra_columns() -> None:
    lines = [
        "\n",
        "amount,order_id,customer_id,date\n",
        "10.5,o1,alice,2024-03-01\n",
        "\n",
        "4,o2,bob,2024-03-02\n",
    ]
    assert parse_transactions(lines) == [
        Transaction("alice", date(2024, 3, 1), 10.5),
        Transaction("bob", date(2024, 3, 2), 4.0),
    ]


def test_read_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("\ufeffcustomer_id,date,amount\nc1,2024-01-31,2.25\n", encoding="utf-8")
    assert read_transactions(path) == [Transaction("c1", date(2024, 1, 31), 2.25)]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["customer,date,amount\n"], "line 1: the header must name the columns"),
        (["customer_id,date,amount\n"], "the file has a header but no transactions"),
        (
            ["customer_id,date,amount\n", "c1,2024-01-01,1\n", "c1,01/02/2024,1\n"],
            "line 3, column date: '01/02/2024' is not a date in the form YYYY-MM-DD",
        ),
        (
            ["customer_id,date,amount\n", "c1,2024-02-30,1\n"],
            "line 2, column date: '2024-02-30'",
        ),
        (
            ["customer_id,date,amount\n", "c1,20240101,1\n"],
            "line 2, column date: '20240101'",
        ),
        (
            ["customer_id,date,amount\n", "\n", "c1,2024-01-01,ten\n"],
            "line 3, column amount: 'ten' is not a number",
        ),
        (["customer_id,date,amount\n", "c1,2024-01-01,nan\n"], "line 2, column amount"),
        (
            ["customer_id,date,amount\n", "c1,2024-01-01,-3\n"],
            "line 2, column amount: '-3' is negative",
        ),
        (
            ["customer_id,date,amount\n", ",2024-01-01,3\n"],
            "line 2, column customer_id: is empty",
        ),
        (
            ["customer_id,date,amount\n", "c1,2024-01-01\n"],
            "line 2: expected 3 columns, got 2",
        ),
        ([], "the file has no transactions"),
        (["\n", "  \n"], "the file has no transactions"),
    ],
)
def test_bad_csv_names_the_line_and_column(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_transactions(lines)


def test_cdnow_master_format_with_its_header() -> None:
    lines = [
        " customer_id  date number_of_cds  dollar_value\n",
        " 00001 19970101  1   11.77\n",
        " 00002 19970112  5   77.00\n",
    ]
    assert parse_transactions(lines) == [
        Transaction("00001", date(1997, 1, 1), 11.77),
        Transaction("00002", date(1997, 1, 12), 77.0),
    ]


def test_cdnow_sample_format_takes_the_first_column_as_the_customer() -> None:
    lines = [" 00004 0001 19970101  2   29.33\n", " 00021 0002 19970101  3   63.34\n"]
    assert parse_transactions(lines) == [
        Transaction("00004", date(1997, 1, 1), 29.33),
        Transaction("00021", date(1997, 1, 1), 63.34),
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([" 00001 1997-01-01 1 11.77\n"], "line 1, column date: '1997-01-01' is not a date"),
        ([" 00001 19970231 1 11.77\n"], "line 1, column date: '19970231'"),
        ([" 00001 19970101 1.5 11.77\n"], "line 1, column quantity: '1.5'"),
        ([" 00001 19970101 1 $11\n"], "line 1, column amount: '$11' is not a number"),
        (
            [" 00001 19970101 1 11.77\n", " 00002 0002 19970101 1 11.77\n"],
            "line 2: expected 4 whitespace-separated columns, got 5",
        ),
        (["header line\n", "1 2 3\n"], "line 2: expected CSV with a header"),
        (["customer_id date quantity amount\n"], "the file has no transactions"),
    ],
)
def test_bad_cdnow_lines_name_the_line_and_column(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_transactions(lines)


def test_summary_counts_purchase_days_within_the_calibration_period() -> None:
    transactions = [
        Transaction("a", date(2024, 1, 1), 10.0),
        Transaction("a", date(2024, 1, 8), 6.0),
        Transaction("a", date(2024, 1, 8), 4.0),  # same day: one purchase of 10
        Transaction("a", date(2024, 1, 22), 20.0),  # the calibration end itself counts
        Transaction("a", date(2024, 1, 23), 99.0),  # after the end: ignored
        Transaction("b", date(2024, 1, 15), 5.0),
        Transaction("b", date(2024, 1, 15), 5.0),
        Transaction("c", date(2024, 2, 1), 1.0),  # first purchase after the end: left out
    ]
    assert summarize(transactions, date(2024, 1, 22)) == [
        CustomerSummary("a", frequency=2, recency=3.0, T=3.0, monetary=15.0),
        CustomerSummary("b", frequency=0, recency=0.0, T=1.0, monetary=0.0),
    ]


def test_summary_in_days() -> None:
    transactions = [
        Transaction("a", date(2024, 1, 1), 1.0),
        Transaction("a", date(2024, 1, 4), 3.0),
    ]
    assert summarize(transactions, date(2024, 1, 11), time_unit_days=1.0) == [
        CustomerSummary("a", frequency=1, recency=3.0, T=10.0, monetary=3.0)
    ]


@pytest.mark.parametrize("days", [0.0, -7.0, float("nan")])
def test_summary_rejects_a_time_unit_that_is_not_positive(days: float) -> None:
    with pytest.raises(ValueError, match="time_unit_days must be a positive number"):
        summarize([], date(2024, 1, 1), days)


def test_cdnow_sample_summary_matches_the_published_calibration_summary(cdnow_dir: Path) -> None:
    """The 2,357-customer sample up to 1997-09-30 in weeks gives, customer by customer, the
    x, t_x, T and mean repeat spend published with the papers (rounded to cents/weeks)."""
    transactions = read_transactions(cdnow_dir / "CDNOW_sample.txt")
    assert len(transactions) == 6_919
    summaries = {s.customer_id: s for s in summarize(transactions, date(1997, 9, 30))}
    assert len(summaries) == 2_357
    # The published summary numbers customers by the sample's second column.
    sample_to_master = {}
    for line in (cdnow_dir / "CDNOW_sample.txt").read_text().splitlines():
        master_id, sample_id, *_ = line.split()
        sample_to_master[int(sample_id)] = master_id
    published_path = cdnow_dir / "cdnow_customers_summary_with_transactions.csv"
    with published_path.open(newline="") as file:
        published = list(csv.DictReader(file))
    assert len(published) == 2_357
    for row in published:
        ours = summaries[sample_to_master[int(row["ID"])]]
        assert ours.frequency == int(row["x"]), row
        assert ours.recency == pytest.approx(float(row["t_x"]), abs=0.006), row
        age = ours.T  # named, or the linter takes the capital T for a constant
        assert age == pytest.approx(float(row["T"]), abs=0.006), row
        assert ours.monetary == pytest.approx(float(row["zbar"]), abs=0.006), row


def test_cdnow_master_file_reads_every_transaction(cdnow_dir: Path) -> None:
    transactions = read_transactions(cdnow_dir / "CDNOW_master.txt")
    assert len(transactions) == 69_659
    assert transactions[0] == Transaction("00001", date(1997, 1, 1), 11.77)
    assert len({t.customer_id for t in transactions}) == 23_570
