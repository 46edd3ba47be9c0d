"""The MovieLens demo's source reading and the calls it makes, without a stack: clear errors
for bad files, the price rule, fixed message ids, time order, the slice."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest

from infra.local.demo_command import USAGE_ERROR, run_demo
from infra.local.demo_load import DemoTarget
from infra.local.movielens import (
    DemoSourceError,
    Film,
    anchor_shift,
    catalog_items,
    event_calls,
    expected_counts,
    identify_calls,
    price_of,
    read_source,
)

USERS = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
ITEMS = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
RATINGS = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ANCHOR = date(2026, 12, 1)


def write_source(folder: Path, users: str = "", items: str = "", ratings: str = "") -> Path:
    (folder / "ml-100k.user").write_text(
        USERS + (users or "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n")
    )
    (folder / "ml-100k.item").write_text(
        ITEMS
        + (items or "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tAlien\t1979\tSci-Fi\n")
    )
    (folder / "ml-100k.inter").write_text(
        RATINGS + (ratings or "2\t1\t3\t881250949\n1\t2\t5\t881250000\n1\t1\t2\t881260000\n")
    )
    return folder


def test_users_films_and_ratings_become_calls_in_time_order(tmp_path: Path) -> None:
    source = read_source(write_source(tmp_path))
    shift = anchor_shift(source, ANCHOR)
    identifies = identify_calls(source, shift)
    assert identifies[0]["userId"] == "ml-user-1"
    assert identifies[0]["traits"] == {
        "email": "ml-user-1@example.com",
        "age": 24,
        "gender": "M",
        "occupation": "technician",
        "postalCode": "85711",
    }
    events = event_calls(source, shift)
    assert [(e["event"], e["messageId"]) for e in events] == [
        ("Product Rated", "ml-rated-1-2"),
        ("Order Completed", "ml-order-1-2"),
        ("Product Rated", "ml-rated-2-1"),
        ("Product Rated", "ml-rated-1-1"),
    ]
    # The newest rating lands at the anchor's midnight; the others keep their spacing.
    assert events[-1]["timestamp"] == "2026-12-01T00:00:00Z"
    assert events[0]["timestamp"] == "2026-11-30T21:13:20Z"
    assert events[1]["properties"]["revenue"] == 4.99
    assert events[0]["properties"]["rating"] == 5
    assert events[0]["properties"]["genres"] == ["Sci-Fi"]
    # The same source and anchor make the same calls (what makes a second load a no-op).
    assert event_calls(read_source(tmp_path), shift) == events
    assert {c["item_id"]: c["price"] for c in catalog_items(source)} == {
        "film-1": 9.99,
        "film-2": 4.99,
    }
    assert {u: (e.rated, e.ordered) for u, e in expected_counts(source).items()} == {
        "ml-user-1": (2, 1),
        "ml-user-2": (1, 0),
    }


def test_a_slice_keeps_the_first_users_and_their_ratings(tmp_path: Path) -> None:
    source = read_source(write_source(tmp_path), users=1)
    assert [u.user_id for u in source.users] == ["1"]
    assert {r.user_id for r in source.ratings} == {"1"}
    assert len(source.films) == 2


def test_the_price_rule_goes_by_release_year() -> None:
    assert price_of(Film("1", "a", 1998, ())) == 9.99
    assert price_of(Film("1", "a", 1995, ())) == 9.99
    assert price_of(Film("1", "a", 1994, ())) == 7.99
    assert price_of(Film("1", "a", 1980, ())) == 7.99
    assert price_of(Film("1", "a", 1979, ())) == 4.99
    assert price_of(Film("1", "a", None, ())) == 3.99


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ratings": "1\t1\t6\t881250949\n"}, r"ml-100k.inter: line 2: rating '6'"),
        ({"ratings": "1\t9\t3\t881250949\n"}, r"ml-100k.inter: line 2: item_id '9' is not in"),
        ({"ratings": "1\t1\t3\tyesterday\n"}, r"line 2: timestamp 'yesterday' is not Unix"),
        ({"ratings": "1\t1\n"}, r"ml-100k.inter: line 2: 2 columns, expected 4"),
        ({"users": "1\told\tM\tx\t1\n"}, r"ml-100k.user: line 2: age 'old' is not a whole"),
        ({"users": "1\t24\tM\tx\t1\n1\t25\tF\ty\t2\n"}, r"line 3: user_id 1 appears twice"),
    ],
)
def test_bad_rows_name_the_file_line_and_value(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    write_source(tmp_path, **files)
    with pytest.raises(DemoSourceError, match=message):
        read_source(tmp_path)


def test_a_missing_file_or_header_is_named(tmp_path: Path) -> None:
    write_source(tmp_path)
    (tmp_path / "ml-100k.user").write_text("id\tage\n1\t2\n")
    with pytest.raises(DemoSourceError, match=r"ml-100k.user: line 1: expected the columns"):
        read_source(tmp_path)
    (tmp_path / "ml-100k.user").unlink()
    with pytest.raises(DemoSourceError, match=r"ml-100k.user: file not found"):
        read_source(tmp_path)
    with pytest.raises(DemoSourceError, match="--users must be at least 1"):
        read_source(tmp_path, users=0)


def test_the_command_reports_a_bad_source_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_source(tmp_path, ratings="1\t1\t3\tsoon\n")
    # Nothing listens here: the source is checked before anything is sent.
    target = DemoTarget("http://127.0.0.1:9", "wk", "key", "", {}, "", ANCHOR)
    assert run_demo(target, source_dir=tmp_path, stream=io.StringIO()) == USAGE_ERROR
    error = capsys.readouterr().err
    assert "ml-100k.inter: line 2: timestamp 'soon' is not Unix seconds" in error
    assert "Traceback" not in error


def test_the_demo_store_settings_are_recommendation_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra.local.movielens import DEMO_STORE_SETTINGS
    from services.recommendation.settings import RecommendationSettings

    monkeypatch.setenv("LODESTAR_MONGO_URI", "mongodb://127.0.0.1:1")
    for name, value in DEMO_STORE_SETTINGS.items():
        monkeypatch.setenv(name, value)
    assert RecommendationSettings().interaction_weights().ordered == 1.0
