"""The one-shot commands: ``evaluate`` prints a table and JSON lines per model, for the
user's own CSV; bad input is one line on stderr and exit code 2; the catalog file checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.platform.errors import InvalidArgument
from services.recommendation.catalog import read_catalog
from services.recommendation.cli import main
from services.recommendation.datasets import read_interactions


def interactions_csv(tmp_path: Path) -> Path:
    lines = ["user_id,item_id,weight,timestamp"]
    for user in range(30):
        items = range(0, 8) if user < 15 else range(8, 16)
        lines += [f"u{user},i{item},{1 + item % 3},1700000000" for item in items]
    path = tmp_path / "interactions.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_prints_a_table_and_json_per_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = interactions_csv(tmp_path)
    code = main(["evaluate", "--interactions", str(path), "--factors", "4", "--iterations", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "30 customers, 16 items, 240 interactions" in out
    assert "ndcg@10" in out.splitlines()[1]  # the table header
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["model"] for r in results] == ["als", "popularity"]
    for result in results:
        assert set(result) == {"model", "precision@10", "map@10", "ndcg@10"}
        assert 0 <= result["ndcg@10"] <= 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,item_id,weight\nu,i,1\n", "missing column(s) timestamp"),
        ("user_id,item_id,weight,timestamp\nu,i,heavy,1\n", "line 2: weight 'heavy'"),
        ("user_id,item_id,weight,timestamp\nu,i,-2,1\n", "line 2: weight must be a positive"),
        ("user_id,item_id,weight,timestamp\nu,,1,1\n", "line 2: user_id and item_id"),
        ("user_id,item_id,weight,timestamp\nu,i,1,yesterday\n", "line 2: timestamp"),
        ("user_id,item_id,weight,timestamp\n", "no interactions"),
    ],
)
def test_evaluate_refuses_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["evaluate", "--interactions", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_bad_command_lines_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["evaluate", "--test-fraction", "2"]) == 2
    assert "not a fraction" in capsys.readouterr().err
    assert main(["forecast"]) == 2
    assert main(["evaluate", "--interactions", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["import-catalog", str(tmp_path / "missing.csv")]) == 2


def test_iso_timestamps_are_read_too(tmp_path: Path) -> None:
    path = tmp_path / "iso.csv"
    path.write_text("user_id,item_id,weight,timestamp\nu,i,2.5,2026-11-01T10:00:00Z\n")
    [interaction] = read_interactions(path)
    assert (interaction.customer_id, interaction.item_id, interaction.value) == ("u", "i", 2.5)
    assert interaction.at.isoformat() == "2026-11-01T10:00:00+00:00"


def test_the_catalog_file_is_checked_line_by_line(tmp_path: Path) -> None:
    good = tmp_path / "catalog.csv"
    good.write_text(
        "item_id,name,category,price,image_url\n"
        "sku-1, Boots ,shoes,129.00,https://img.example/1.png\n"
        "sku-2,Socks,,,\n"
    )
    items = read_catalog(good)
    assert [(i.item_id, i.name, i.category, i.price) for i in items] == [
        ("sku-1", "Boots", "shoes", 129.0),
        ("sku-2", "Socks", "", None),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,price\nsku-1,cheap\n")
    with pytest.raises(InvalidArgument, match=r"line 2\.price 'cheap' is not a number"):
        read_catalog(bad)
    bad.write_text("name\nBoots\n")
    with pytest.raises(InvalidArgument, match="missing column item_id"):
        read_catalog(bad)
