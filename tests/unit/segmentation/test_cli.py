"""``fit-clv``: the fitted parameters as JSON on the CDNOW files, in CDNOW's format and as
CSV, and a one-line error with exit code 2 for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.segmentation.cli import main
from services.segmentation.transactions import read_transactions

PUBLISHED = {
    "bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
    "gamma_gamma": {"p": 6.25, "q": 3.74, "gamma": 15.44},
}


def _fit(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(["fit-clv", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fit_clv_on_the_cdnow_sample(capsys: pytest.CaptureFixture[str], cdnow_dir: Path) -> None:
    code, out, err = _fit(
        capsys,
        "--transactions",
        str(cdnow_dir / "CDNOW_sample.txt"),
        "--calibration-end",
        "1997-09-30",
    )
    assert (code, err) == (0, "")
    fitted = json.loads(out)
    assert fitted["calibration_end"] == "1997-09-30"
    assert fitted["model_version"] == "bgnbd-gg-1"
    assert fitted["time_unit_days"] == 7.0
    assert (fitted["customers"], fitted["repeat_customers"]) == (2_357, 946)
    for model, params in PUBLISHED.items():
        assert set(fitted[model]) == set(params)
        for name, value in params.items():
            assert fitted[model][name] == pytest.approx(value, rel=0.02), name


def test_fit_clv_reads_csv_like_the_cdnow_format(
    capsys: pytest.CaptureFixture[str], cdnow_dir: Path, tmp_path: Path
) -> None:
    """The same purchases as CSV, in days: the same model, with alpha in days."""
    csv_path = tmp_path / "cdnow.csv"
    rows = [
        f"{t.customer_id},{t.day.isoformat()},{t.amount}"
        for t in read_transactions(cdnow_dir / "CDNOW_sample.txt")
    ]
    csv_path.write_text("customer_id,date,amount\n" + "\n".join(rows) + "\n")
    arguments = ["--calibration-end", "1997-09-30", "--time-unit-days", "1"]
    code, out, _ = _fit(capsys, "--transactions", str(csv_path), *arguments)
    assert code == 0
    in_days = json.loads(out)
    assert in_days["time_unit_days"] == 1.0
    assert in_days["bgnbd"]["alpha"] == pytest.approx(4.414 * 7, rel=0.02)
    for name in ("r", "a", "b"):
        assert in_days["bgnbd"][name] == pytest.approx(PUBLISHED["bgnbd"][name], rel=0.02)


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit-clv", "--help"]) == 0
    assert "--calibration-end" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "the following arguments are required: --transactions, --calibration-end"),
        (["--transactions", "x.csv"], "the following arguments are required: --calibration-end"),
        (
            ["--transactions", "x.csv", "--calibration-end", "30/09/1997"],
            "argument --calibration-end: '30/09/1997' is not a date in the form YYYY-MM-DD",
        ),
        (
            ["--transactions", "x.csv", "--calibration-end", "1997-09-30", "--time-unit-days", "0"],
            "argument --time-unit-days: '0' is not a positive number of days",
        ),
        (["--transactions", "x.csv", "--calibration-end", "1997-09-30", "--extra"], "--extra"),
    ],
)
def test_bad_arguments(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    code, out, err = _fit(capsys, *arguments)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("python -m services.segmentation: error: ")
    assert message in err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit-lcv"]) == 2
    assert "invalid choice: 'fit-lcv'" in capsys.readouterr().err


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    code, out, err = _fit(capsys, "--transactions", str(missing), "--calibration-end", "2024-01-01")
    assert (code, out) == (2, "")
    assert err == f"fit-clv: error: cannot read {missing}: No such file or directory\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "customer_id,date,amount\na,2024-01-01,10\na,2024-13-01,5\n",
            "line 3, column date: '2024-13-01' is not a date in the form YYYY-MM-DD",
        ),
        ("id,day,value\n", "line 1: the header must name the columns customer_id, date, amount"),
        (
            "customer_id,date,amount\na,2025-01-01,10\n",
            "no purchases on or before 2024-12-31",
        ),
        (
            "customer_id,date,amount\na,2024-01-01,10\nb,2024-02-01,5\n",
            "BG/NBD needs at least one customer with a repeat purchase",
        ),
        (
            "customer_id,date,amount\na,2024-01-01,10\na,2024-02-01,5\nb,2024-02-01,5\n",
            "the BG/NBD fit did not converge: the data do not determine its parameters",
        ),
    ],
)
def test_bad_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "transactions.csv"
    path.write_text(content)
    code, out, err = _fit(capsys, "--transactions", str(path), "--calibration-end", "2024-12-31")
    assert (code, out) == (2, "")
    assert err.startswith(f"fit-clv: error: {path}: {message}")
    assert err.count("\n") == 1
