"""RFM: quintile boundaries and ties, the cell table, and a hand-computed set of customers."""

from __future__ import annotations

import pytest

from services.segmentation.rfm import (
    CELLS,
    CustomerActivity,
    RfmCell,
    RfmScore,
    cell_of,
    quintile_scores,
    rfm_scores,
)


@pytest.mark.parametrize(
    ("values", "scores"),
    [
        ([10.0, 20.0, 30.0, 40.0, 50.0], [1, 2, 3, 4, 5]),
        ([50.0, 10.0, 40.0, 20.0, 30.0], [5, 1, 4, 2, 3]),
        ([float(v) for v in range(10)], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
        # Seven customers: mid-rank percentiles 1/14, 3/14, ..., 13/14.
        ([float(v) for v in range(7)], [1, 2, 2, 3, 4, 4, 5]),
        ([7.0], [3]),
        ([7.0, 7.0, 7.0, 7.0], [3, 3, 3, 3]),
        # Ties share a score: the three 1s sit at mid-rank percentile 1.5 / 6 = 0.25.
        ([1.0, 1.0, 1.0, 2.0, 3.0, 4.0], [2, 2, 2, 3, 4, 5]),
        ([1.0, 5.0, 5.0, 5.0, 5.0], [1, 4, 4, 4, 4]),
        ([], []),
    ],
)
def test_quintile_scores(values: list[float], scores: list[int]) -> None:
    assert quintile_scores(values) == scores


def test_quintiles_split_evenly_and_exactly_on_boundaries() -> None:
    # 100 distinct values: 20 per score, the boundary between 20 and 21 exact in integers.
    scores = quintile_scores([float(v) for v in range(100)])
    assert [scores.count(s) for s in range(1, 6)] == [20, 20, 20, 20, 20]
    assert scores[19:21] == [1, 2]
    assert scores[79:81] == [4, 5]


def test_cell_table_covers_every_score_pair_with_the_named_cells() -> None:
    assert len(CELLS) == 5
    assert all(len(row) == 5 for row in CELLS)
    assert {cell for row in CELLS for cell in row} == set(RfmCell)
    assert {
        "Champions",
        "Loyal",
        "Potential loyalist",
        "At risk",
        "Can't lose",
        "Hibernating",
        "Lost",
    } <= {str(cell) for cell in RfmCell}


@pytest.mark.parametrize(
    ("recency", "frequency_monetary", "cell"),
    [
        (5, 5, RfmCell.CHAMPIONS),
        (5, 4, RfmCell.CHAMPIONS),
        (4, 4, RfmCell.LOYAL),
        (3, 5, RfmCell.LOYAL),
        (5, 2, RfmCell.POTENTIAL_LOYALIST),
        (4, 3, RfmCell.POTENTIAL_LOYALIST),
        (5, 1, RfmCell.NEW),
        (4, 1, RfmCell.PROMISING),
        (3, 3, RfmCell.NEED_ATTENTION),
        (3, 1, RfmCell.ABOUT_TO_SLEEP),
        (3, 2, RfmCell.ABOUT_TO_SLEEP),
        (2, 3, RfmCell.AT_RISK),
        (1, 4, RfmCell.AT_RISK),
        (1, 5, RfmCell.CANT_LOSE),
        (2, 5, RfmCell.CANT_LOSE),
        (2, 1, RfmCell.HIBERNATING),
        (1, 2, RfmCell.HIBERNATING),
        (1, 1, RfmCell.LOST),
    ],
)
def test_cell_of(recency: int, frequency_monetary: int, cell: RfmCell) -> None:
    assert cell_of(recency, frequency_monetary) is cell


@pytest.mark.parametrize(("recency", "frequency_monetary"), [(0, 3), (6, 3), (3, 0), (3, 6)])
def test_cell_of_refuses_scores_outside_one_to_five(recency: int, frequency_monetary: int) -> None:
    with pytest.raises(ValueError, match="RFM scores run from 1 to 5"):
        cell_of(recency, frequency_monetary)


@pytest.mark.parametrize(
    ("frequency", "monetary", "frequency_monetary"),
    [(1, 1, 1), (1, 2, 2), (2, 3, 3), (4, 5, 5), (5, 5, 5), (1, 5, 3)],
)
def test_frequency_monetary_rounds_half_up(
    frequency: int, monetary: int, frequency_monetary: int
) -> None:
    assert RfmScore(3, frequency, monetary).frequency_monetary == frequency_monetary


def test_hand_computed_customers() -> None:
    """Ten customers; every column has distinct values, so scores go two customers per
    quintile (fewest days since the last order score highest)."""
    customers = [
        CustomerActivity("ana", recency_days=2, orders=40, monetary=5_000.0),
        CustomerActivity("ben", recency_days=5, orders=1, monetary=30.0),
        CustomerActivity("cy", recency_days=20, orders=25, monetary=2_000.0),
        CustomerActivity("dee", recency_days=30, orders=8, monetary=400.0),
        CustomerActivity("eli", recency_days=60, orders=12, monetary=900.0),
        CustomerActivity("fay", recency_days=90, orders=3, monetary=120.0),
        CustomerActivity("gus", recency_days=200, orders=30, monetary=3_500.0),
        CustomerActivity("hal", recency_days=250, orders=5, monetary=150.0),
        CustomerActivity("ivy", recency_days=400, orders=18, monetary=1_200.0),
        CustomerActivity("jo", recency_days=700, orders=2, monetary=20.0),
    ]
    scores = rfm_scores(customers)
    #          R  F  M  FM cell
    expected = {
        "ana": (5, 5, 5, 5, RfmCell.CHAMPIONS),
        "ben": (5, 1, 1, 1, RfmCell.NEW),
        "cy": (4, 4, 4, 4, RfmCell.LOYAL),
        "dee": (4, 3, 3, 3, RfmCell.POTENTIAL_LOYALIST),
        "eli": (3, 3, 3, 3, RfmCell.NEED_ATTENTION),
        "fay": (3, 2, 2, 2, RfmCell.ABOUT_TO_SLEEP),
        "gus": (2, 5, 5, 5, RfmCell.CANT_LOSE),
        "hal": (2, 2, 2, 2, RfmCell.HIBERNATING),
        "ivy": (1, 4, 4, 4, RfmCell.AT_RISK),
        "jo": (1, 1, 1, 1, RfmCell.LOST),
    }
    assert list(scores) == [c.customer_id for c in customers]
    for customer_id, (r, f, m, fm, cell) in expected.items():
        score = scores[customer_id]
        assert (score.recency, score.frequency, score.monetary) == (r, f, m), customer_id
        assert score.frequency_monetary == fm, customer_id
        assert score.cell is cell, customer_id
    # The same customers in another order score the same.
    assert rfm_scores(list(reversed(customers))) == scores


def test_ties_score_alike() -> None:
    customers = [
        CustomerActivity("a", recency_days=10, orders=2, monetary=50.0),
        CustomerActivity("b", recency_days=10, orders=2, monetary=50.0),
        CustomerActivity("c", recency_days=400, orders=1, monetary=10.0),
    ]
    scores = rfm_scores(customers)
    assert scores["a"] == scores["b"] == RfmScore(4, 4, 4)
    assert scores["a"].cell is RfmCell.LOYAL
    assert scores["c"] == RfmScore(1, 1, 1)
    assert scores["c"].cell is RfmCell.LOST


@pytest.mark.parametrize(
    ("customer", "message"),
    [
        (CustomerActivity("x", 5, 0, 0.0), "'x' has no orders"),
        (CustomerActivity("x", -1, 1, 10.0), "'x' has recency -1 days"),
        (CustomerActivity("x", float("nan"), 1, 10.0), "'x' has recency nan days"),
        (CustomerActivity("x", 1, 1, float("inf")), "'x' has a non-finite monetary value"),
        (CustomerActivity("a", 1, 1, 1.0), "'a' is given twice"),
    ],
)
def test_bad_activity_is_refused(customer: CustomerActivity, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rfm_scores([CustomerActivity("a", 1, 1, 1.0), customer])
