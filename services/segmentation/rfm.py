"""RFM: recency, frequency and monetary quintile scores, and the named cells marketers act on.

Each customer gets three scores from 1 to 5 relative to all customers scored together: the
more recent the last order, the more orders and the more money, the higher. A score is
``1 + floor(5 * mid-rank percentile)``, where the mid-rank percentile of a value is (number
of customers strictly worse + half the customers tied with it) / number of customers. So
customers with the same value always get the same score, whatever the input order, five
customers with distinct values get 1 to 5, and when everyone ties everyone gets 3.

The cell comes from the recency score R and the frequency-monetary score FM = (F + M) / 2,
rounded half up:

=======  ==============  ==================  ==================  =========  ==========
R \\ FM   1               2                   3                   4          5
=======  ==============  ==================  ==================  =========  ==========
5        New             Potential loyalist  Potential loyalist  Champions  Champions
4        Promising       Potential loyalist  Potential loyalist  Loyal      Loyal
3        About to sleep  About to sleep      Need attention      Loyal      Loyal
2        Hibernating     Hibernating         At risk             At risk    Can't lose
1        Lost            Hibernating         At risk             At risk    Can't lose
=======  ==============  ==================  ==================  =========  ==========
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

QUINTILES = 5


class RfmCell(StrEnum):
    """The named RFM cells, in the words marketers use for them."""

    CHAMPIONS = "Champions"
    LOYAL = "Loyal"
    POTENTIAL_LOYALIST = "Potential loyalist"
    NEW = "New"
    PROMISING = "Promising"
    NEED_ATTENTION = "Need attention"
    ABOUT_TO_SLEEP = "About to sleep"
    AT_RISK = "At risk"
    CANT_LOSE = "Can't lose"
    HIBERNATING = "Hibernating"
    LOST = "Lost"


_C = RfmCell
# Rows R = 1..5, columns FM = 1..5: the table of the module docstring.
CELLS: tuple[tuple[RfmCell, ...], ...] = (
    (_C.LOST, _C.HIBERNATING, _C.AT_RISK, _C.AT_RISK, _C.CANT_LOSE),
    (_C.HIBERNATING, _C.HIBERNATING, _C.AT_RISK, _C.AT_RISK, _C.CANT_LOSE),
    (_C.ABOUT_TO_SLEEP, _C.ABOUT_TO_SLEEP, _C.NEED_ATTENTION, _C.LOYAL, _C.LOYAL),
    (_C.PROMISING, _C.POTENTIAL_LOYALIST, _C.POTENTIAL_LOYALIST, _C.LOYAL, _C.LOYAL),
    (_C.NEW, _C.POTENTIAL_LOYALIST, _C.POTENTIAL_LOYALIST, _C.CHAMPIONS, _C.CHAMPIONS),
)


@dataclass(frozen=True, slots=True)
class CustomerActivity:
    """What RFM reads of one customer: days since the last order, number of orders, and the
    money they brought (lifetime revenue, say; any measure where more is better)."""

    customer_id: str
    recency_days: float
    orders: int
    monetary: float


@dataclass(frozen=True, slots=True)
class RfmScore:
    """A customer's three quintile scores (1 to 5, higher is better) and their cell."""

    recency: int
    frequency: int
    monetary: int

    @property
    def frequency_monetary(self) -> int:
        """(F + M) / 2 rounded half up: how much the customer buys, in one score."""
        return (self.frequency + self.monetary + 1) // 2

    @property
    def cell(self) -> RfmCell:
        """The named cell of (R, FM)."""
        return cell_of(self.recency, self.frequency_monetary)


def cell_of(recency: int, frequency_monetary: int) -> RfmCell:
    """The named cell for a recency score and a frequency-monetary score, each 1 to 5."""
    if not (1 <= recency <= QUINTILES and 1 <= frequency_monetary <= QUINTILES):
        raise ValueError(
            f"RFM scores run from 1 to {QUINTILES}, got R={recency}, FM={frequency_monetary}"
        )
    return CELLS[recency - 1][frequency_monetary - 1]


def quintile_scores(values: Sequence[float]) -> list[int]:
    """Scores 1 to 5 of ``values`` relative to each other, higher values scoring higher, by
    mid-rank percentile so ties share a score."""
    ordered = sorted(values)
    count = len(ordered)
    scores = []
    for value in values:
        below = bisect_left(ordered, value)
        tied = bisect_right(ordered, value) - below
        # 1 + floor(5 * (below + tied / 2) / count), in integers so boundaries are exact.
        scores.append(1 + (QUINTILES * (2 * below + tied)) // (2 * count))
    return scores


def rfm_scores(customers: Sequence[CustomerActivity]) -> dict[str, RfmScore]:
    """RFM scores per customer id, relative to the customers given.

    Raises ``ValueError`` for a customer without orders (RFM describes buyers), a negative
    recency, a value that is not a finite number, or a customer id given twice.
    """
    seen: set[str] = set()
    for customer in customers:
        if customer.customer_id in seen:
            raise ValueError(f"customer {customer.customer_id!r} is given twice")
        seen.add(customer.customer_id)
        if customer.orders < 1:
            raise ValueError(f"customer {customer.customer_id!r} has no orders")
        if not (math.isfinite(customer.recency_days) and customer.recency_days >= 0):
            raise ValueError(
                f"customer {customer.customer_id!r} has recency {customer.recency_days} days: "
                "expected a number from 0"
            )
        if not math.isfinite(customer.monetary):
            raise ValueError(f"customer {customer.customer_id!r} has a non-finite monetary value")
    # Fewer days since the last order is better, so recency is scored on its negation.
    recency = quintile_scores([-c.recency_days for c in customers])
    frequency = quintile_scores([float(c.orders) for c in customers])
    monetary = quintile_scores([c.monetary for c in customers])
    return {
        c.customer_id: RfmScore(r, f, m)
        for c, r, f, m in zip(customers, recency, frequency, monetary, strict=True)
    }
