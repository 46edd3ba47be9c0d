"""Orders and loyalty: e-commerce events fold into order records, and the figures derived
from them follow refunds, redemptions and the moving 12-month window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.profile.commerce import (
    LoyaltyRules,
    Order,
    loyalty,
    minor_units,
    order_amount,
    orders_from,
    summarize_orders,
)
from services.profile.fold import ResolvedEvent, fold, merge

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RULES = LoyaltyRules()


def track(event_id: str, name: str, at: datetime, **properties: Any) -> ResolvedEvent:
    return ResolvedEvent(event_id, "c", "track", name, at, properties=properties)


def stored(*events: ResolvedEvent) -> dict[str, dict[str, Any]]:
    """Apply folded ``$set`` paths the way MongoDB would, into an orders map."""
    orders: dict[str, dict[str, Any]] = {}
    for path, value in merge([fold(e) for e in events]).set_fields.items():
        _, order_id, name = path.split(".", 2)
        orders.setdefault(order_id, {})[name] = value
    return orders


@pytest.mark.parametrize(
    ("amount", "minor"),
    [
        (129, 12900),
        (19.99, 1999),
        ("5.005", 501),
        (0.1 + 0.2, 30),
        (True, None),
        ("x", None),
        (float("nan"), None),
    ],
)
def test_minor_units(amount: Any, minor: int | None) -> None:
    assert minor_units(amount) == minor


def test_order_amount_prefers_total_then_revenue_then_products() -> None:
    assert order_amount({"total": 30, "revenue": 25}) == 3000
    assert order_amount({"revenue": 25}) == 2500
    products = [{"price": 10, "quantity": 2}, {"price": 5.5}, "junk"]
    assert order_amount({"products": products}) == 2550
    assert order_amount({}) is None


def test_the_same_order_sent_twice_counts_once_and_updates() -> None:
    first = track("e1", "Order Completed", T0, order_id="o-1", total=100, currency="eur")
    again = track("e2", "Order Completed", T0, order_id="o-1", total=120, currency="EUR")
    orders = orders_from(stored(first, again))
    summary = summarize_orders(orders, "EUR")
    assert summary.order_count == 1
    assert summary.revenue_minor == {"EUR": 12000}


def test_refunds_full_and_partial_and_before_their_order() -> None:
    events = [
        track("e1", "Order Completed", T0, order_id="o-1", total=100, currency="EUR"),
        track("e2", "Order Completed", T0, order_id="o-2", total=50, currency="EUR"),
        track("e3", "Order Refunded", T0, order_id="o-1", total=30),
        track("e4", "Order Refunded", T0, order_id="o-2"),
        track("e5", "Order Refunded", T0, order_id="o-3"),  # its order never arrived
    ]
    summary = summarize_orders(orders_from(stored(*events)), "EUR")
    assert summary.order_count == 2
    assert summary.revenue_minor == {"EUR": 7000}
    assert summary.average_order_minor == 3500


def test_currencies_are_kept_apart() -> None:
    events = [
        track("e1", "Order Completed", T0, order_id="a", total=100, currency="EUR"),
        track(
            "e2", "Order Completed", T0 + timedelta(days=1), order_id="b", total=80, currency="USD"
        ),
    ]
    orders = orders_from(stored(*events))
    summary = summarize_orders(orders, "EUR")
    assert summary.revenue_minor == {"EUR": 10000, "USD": 8000}
    assert summary.average_order_minor == 10000
    assert (summary.first_order_at, summary.last_order_at) == (T0, T0 + timedelta(days=1))
    status = loyalty(orders, {}, RULES, T0 + timedelta(days=2))
    assert status.points == 100  # only base-currency spend earns


def test_points_and_cashback_minus_redemptions() -> None:
    orders = [Order("o", 250_00, "EUR", T0)]
    redeemed = merge(
        [
            fold(track("r1", "Points Redeemed", T0, points=40)),
            fold(track("r2", "Cashback Redeemed", T0, amount=1.5)),
            fold(track("r3", "Points Redeemed", T0, points=-5)),  # ignored: not a redemption
        ]
    ).inc_fields
    status = loyalty(orders, {k.split(".")[1]: v for k, v in redeemed.items()}, RULES, T0)
    assert status.points == 210
    assert status.points_redeemed == 40
    assert status.cashback_minor == 500 - 150


def test_tier_rises_with_spend_and_falls_as_the_window_moves() -> None:
    orders = [
        Order("a", 400_00, "EUR", T0),
        Order("b", 200_00, "EUR", T0 + timedelta(days=30)),  # 600: Silver
        Order("c", 1_000_00, "EUR", T0 + timedelta(days=60)),  # 1,600: Gold
    ]
    at_gold = loyalty(orders, {}, RULES, T0 + timedelta(days=61))
    assert (at_gold.tier, at_gold.tier_since) == ("Gold", T0 + timedelta(days=60))
    assert at_gold.spend_last_year_minor == 1_600_00
    # A year after the first order it leaves the window: 1,200 is Silver again.
    later = T0 + timedelta(days=366)
    dropped = loyalty(orders, {}, RULES, later)
    assert (dropped.tier, dropped.tier_since) == ("Silver", T0 + timedelta(days=365))
    # And once everything has left the window, back to Bronze.
    gone = loyalty(orders, {}, RULES, T0 + timedelta(days=500))
    assert gone.tier == "Bronze"
    assert gone.spend_last_year_minor == 0


def test_tier_thresholds_and_rates_are_configurable() -> None:
    rules = LoyaltyRules(
        points_per_unit=Decimal(10),
        cashback_percent=Decimal(0),
        tiers=(("Member", 0), ("VIP", 100_00)),
    )
    status = loyalty([Order("o", 100_00, "EUR", T0)], {}, rules, T0)
    assert (status.tier, status.points, status.cashback_minor) == ("VIP", 1000, 0)


def test_cart_is_open_while_the_last_addition_is_newer_than_the_last_order() -> None:
    from services.profile.commerce import cart

    added = track("a1", "Product Added", T0 + timedelta(hours=2), product_id="sku-9")
    ordered = track("o1", "Order Completed", T0 + timedelta(hours=1), order_id="o1", total=5)
    timed = merge([fold(ordered), fold(added)]).timed_fields
    state = {k.split(".", 1)[1]: v for k, v in timed.items() if k.startswith("cart.")}
    basket = cart(state)
    assert basket.open
    assert basket.last_product_id == "sku-9"
    later_order = track("o2", "Order Completed", T0 + timedelta(hours=3), order_id="o2", total=5)
    timed = merge([fold(ordered), fold(added), fold(later_order)]).timed_fields
    state = {k.split(".", 1)[1]: v for k, v in timed.items() if k.startswith("cart.")}
    assert not cart(state).open
    assert not cart({}).open


def test_tiers_can_go_by_purchases_in_the_window() -> None:
    rules = LoyaltyRules(tiers=(("Bronze", 0), ("Silver", 2), ("Gold", 3)), tier_basis="purchases")
    orders = [
        Order("a", 10_00, "EUR", T0),
        Order("b", 5_00, "USD", T0 + timedelta(days=10)),  # any currency counts
        Order("c", 20_00, "EUR", T0 + timedelta(days=20), refunded_minor=20_00),  # wholly refunded
        Order("d", 15_00, "EUR", T0 + timedelta(days=30)),
    ]
    status = loyalty(orders, {}, rules, T0 + timedelta(days=31))
    assert (status.tier, status.tier_since) == ("Gold", T0 + timedelta(days=30))
    assert status.purchases_last_year == 3
    # The first order leaves the window a year later: two purchases, Silver.
    later = loyalty(orders, {}, rules, T0 + timedelta(days=366))
    assert (later.tier, later.tier_since) == ("Silver", T0 + timedelta(days=365))
    assert later.purchases_last_year == 2


def test_an_unknown_tier_basis_is_refused() -> None:
    with pytest.raises(ValueError, match="tier basis"):
        LoyaltyRules(tier_basis="visits")


def test_purchase_days_and_repeat_average_feed_purchase_models() -> None:
    from services.profile.commerce import summarize_orders

    orders = [
        Order("a", 10_00, "EUR", T0),
        Order("b", 5_00, "EUR", T0 + timedelta(hours=2)),  # same day as the first
        Order("c", 30_00, "EUR", T0 + timedelta(days=3)),
        Order("d", 20_00, "EUR", T0 + timedelta(days=9), refunded_minor=10_00),
    ]
    summary = summarize_orders(orders, "EUR")
    assert summary.purchase_days == 3
    assert summary.repeat_average_minor == (30_00 + 10_00) // 2
    assert summarize_orders(orders[:2], "EUR").repeat_average_minor == 0
