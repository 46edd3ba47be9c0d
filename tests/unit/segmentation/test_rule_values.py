"""A condition's value is typed once parsed: a day count is a number, ``in`` and ``between``
hold tuples; a tree built by hand with the wrong shape fails loudly when compiled."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.segmentation.rules import (
    AllOf,
    FieldCondition,
    FieldKind,
    days_of,
    items_of,
    parse,
    value_test,
)
from services.segmentation.rules.compiler import compile_rule


def test_parsed_values_have_their_shapes() -> None:
    rule = parse(
        {
            "all": [
                {"field": "last_seen", "op": "within_last_days", "value": 30},
                {"field": "loyalty.tier", "op": "in", "value": ["gold", "silver"]},
                {"field": "orders.revenue", "op": "between", "value": [10, 20.5]},
            ]
        }
    )
    assert isinstance(rule.root, AllOf)
    recent, tier, revenue = rule.root.rules
    assert isinstance(recent, FieldCondition)
    assert isinstance(tier, FieldCondition)
    assert isinstance(revenue, FieldCondition)
    assert days_of(recent.value) == 30
    assert items_of(tier.value) == ("gold", "silver")
    assert items_of(revenue.value) == (10, 20.5)


@pytest.mark.parametrize("value", ["30", True, ("a",), datetime(2026, 1, 1, tzinfo=UTC)])
def test_a_day_count_that_is_not_a_number_is_refused(value: object) -> None:
    with pytest.raises(TypeError, match="within_last_days"):
        days_of(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["ab", 3, 2.5, False])
def test_in_or_between_without_a_tuple_is_refused(value: object) -> None:
    with pytest.raises(TypeError, match="in/between"):
        items_of(value)  # type: ignore[arg-type]


def test_a_hand_built_tree_with_a_text_day_count_does_not_compile() -> None:
    wrong = FieldCondition(
        "last_seen", "within_last_days", "30", FieldKind.DATETIME, ("last_seen",)
    )
    with pytest.raises(TypeError, match="within_last_days holds str"):
        compile_rule(wrong)


def test_value_tests_still_compare_within_type() -> None:
    assert value_test("gt", 5)(6)
    assert not value_test("gt", 5)("6")
