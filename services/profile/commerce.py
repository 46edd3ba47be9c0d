"""Orders and loyalty, as pure logic: how Segment e-commerce events become order records,
and what a customer's orders add up to (revenue, average order value, points, cashback,
tier over the last twelve months).

Orders are stored per ``order_id`` and every figure is derived from them when read, so the
same order sent twice updates it and never counts twice, and a refund or an expired window
changes the figures without a new write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.profile.records import StoredCart

ORDER_COMPLETED = "Order Completed"
ORDER_UPDATED = "Order Updated"
ORDER_REFUNDED = "Order Refunded"
PRODUCT_ADDED = "Product Added"
POINTS_REDEEMED = "Points Redeemed"
CASHBACK_REDEEMED = "Cashback Redeemed"
WINDOW = timedelta(days=365)
SPEND = "spend"
PURCHASES = "purchases"


def minor_units(amount: Any) -> int | None:
    """An amount in cents (half up); ``None`` when it is not a number."""
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        return None
    try:
        value = Decimal(str(amount))
    except ArithmeticError:
        return None
    if not value.is_finite():
        return None
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def order_amount(properties: Mapping[str, Any]) -> int | None:
    """An order's value in minor units: ``total``, else ``revenue``, else its products."""
    for key in ("total", "revenue"):
        if key in properties and (value := minor_units(properties[key])) is not None:
            return value
    products = properties.get("products")
    if isinstance(products, list):
        amounts = []
        for product in products:
            if not isinstance(product, dict):
                continue
            price = minor_units(product.get("price"))
            quantity = product.get("quantity", 1)
            if price is not None and isinstance(quantity, int | float):
                amounts.append(price * int(quantity))
        if amounts:
            return sum(amounts)
    return None


def order_fields(
    event_name: str, properties: Mapping[str, Any], at: datetime, order_key: str
) -> dict[str, Any]:
    """The ``$set`` paths an e-commerce event writes under ``orders.<order_key>``."""
    prefix = f"orders.{order_key}"
    if event_name in (ORDER_COMPLETED, ORDER_UPDATED):
        amount = order_amount(properties)
        if amount is None:
            return {}
        products = properties.get("products")
        return {
            f"{prefix}.amount_minor": amount,
            f"{prefix}.currency": str(properties.get("currency") or "").upper() or None,
            f"{prefix}.at": at,
            f"{prefix}.products": products if isinstance(products, list) else [],
        }
    if event_name == ORDER_REFUNDED:
        refunded = order_amount(properties)
        fields: dict[str, Any] = {f"{prefix}.refunded_at": at}
        # No amount: the whole order was refunded (resolved when summarising).
        fields[f"{prefix}.refunded_minor"] = -1 if refunded is None else refunded
        return fields
    return {}


@dataclass(frozen=True)
class LoyaltyRules:
    """Points, cashback and tiers, from settings."""

    base_currency: str = "EUR"
    points_per_unit: Decimal = Decimal(1)
    cashback_percent: Decimal = Decimal(2)
    # Lowest first; a tier is reached by what the customer did over the last year: spend in
    # the base currency (thresholds in minor units) or purchases (thresholds in orders).
    tiers: tuple[tuple[str, int], ...] = (
        ("Bronze", 0),
        ("Silver", 500_00),
        ("Gold", 1_500_00),
        ("Platinum", 5_000_00),
    )
    tier_basis: str = SPEND

    def __post_init__(self) -> None:
        if self.tier_basis not in (SPEND, PURCHASES):
            raise ValueError(f"tier basis must be {SPEND!r} or {PURCHASES!r}")

    def tier_for(self, measure: int) -> str:
        """The highest tier whose threshold the measure (spend or purchases) reaches."""
        reached = [name for name, threshold in self.tiers if measure >= threshold]
        return reached[-1] if reached else self.tiers[0][0]

    def measure(self, orders: Sequence[Order], start: datetime, end: datetime) -> int:
        """What tiers are reached by, over orders placed in ``(start, end]``: net spend in
        the base currency, or the number of orders not wholly refunded."""
        if self.tier_basis == PURCHASES:
            return purchases_between(orders, start, end)
        return spend_between(orders, start, end, self.base_currency)


@dataclass(frozen=True)
class Order:
    """One stored order, net of refunds."""

    order_id: str
    amount_minor: int
    currency: str | None
    at: datetime
    refunded_minor: int = 0

    @property
    def net_minor(self) -> int:
        """What the customer paid and kept."""
        return max(0, self.amount_minor - self.refunded_minor)


def orders_from(stored: Mapping[str, Mapping[str, Any]]) -> list[Order]:
    """Stored order records that are complete enough to count, oldest first."""
    orders = []
    for order_id, record in stored.items():
        if "amount_minor" not in record or "at" not in record:
            continue  # a refund that arrived before its order
        amount = int(record["amount_minor"])
        refunded = int(record.get("refunded_minor", 0))
        orders.append(
            Order(
                order_id=order_id,
                amount_minor=amount,
                currency=record.get("currency"),
                at=record["at"],
                refunded_minor=amount if refunded < 0 else refunded,
            )
        )
    return sorted(orders, key=lambda o: (o.at, o.order_id))


@dataclass(frozen=True)
class OrdersSummary:
    """What a customer's orders add up to."""

    order_count: int = 0
    revenue_minor: dict[str, int] = field(default_factory=dict)
    average_order_minor: int = 0
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    # For purchase models (BG/NBD, Gamma-Gamma): days with a purchase, and the mean
    # base-currency spend of the days after the first (repeat purchases).
    purchase_days: int = 0
    repeat_average_minor: int = 0


@dataclass(frozen=True)
class Loyalty:
    """Points, cashback and tier."""

    points: int
    points_redeemed: int
    cashback_minor: int
    tier: str
    tier_since: datetime | None
    spend_last_year_minor: int
    purchases_last_year: int = 0


def summarize_orders(orders: Sequence[Order], base_currency: str) -> OrdersSummary:
    """Count, net revenue per currency, average order value in the base currency."""
    if not orders:
        return OrdersSummary()
    revenue: dict[str, int] = {}
    for order in orders:
        currency = order.currency or base_currency
        revenue[currency] = revenue.get(currency, 0) + order.net_minor
    base = [o for o in orders if (o.currency or base_currency) == base_currency]
    average = sum(o.net_minor for o in base) // len(base) if base else 0
    days: dict[object, int] = {}
    for order in base:
        day = order.at.date()
        days[day] = days.get(day, 0) + order.net_minor
    repeat = list(days.values())[1:]  # orders are oldest first: the first day is not a repeat
    return OrdersSummary(
        order_count=len(orders),
        revenue_minor=revenue,
        average_order_minor=average,
        first_order_at=orders[0].at,
        last_order_at=orders[-1].at,
        purchase_days=len({o.at.date() for o in orders}),
        repeat_average_minor=sum(repeat) // len(repeat) if repeat else 0,
    )


def spend_between(orders: Sequence[Order], start: datetime, end: datetime, currency: str) -> int:
    """Net base-currency spend of orders placed in ``(start, end]``."""
    return sum(
        o.net_minor for o in orders if start < o.at <= end and (o.currency or currency) == currency
    )


def purchases_between(orders: Sequence[Order], start: datetime, end: datetime) -> int:
    """Orders placed in ``(start, end]`` that were not wholly refunded, in any currency."""
    return sum(1 for o in orders if start < o.at <= end and o.net_minor > 0)


def loyalty(
    orders: Sequence[Order],
    redeemed: Mapping[str, Any],
    rules: LoyaltyRules,
    now: datetime,
) -> Loyalty:
    """Points and cashback from lifetime base-currency spend minus what was redeemed; the
    tier from spend or purchases over the last year, and since when it holds (an order that
    lifted it, or an old order leaving the window that lowered it)."""
    lifetime = sum(
        o.net_minor for o in orders if (o.currency or rules.base_currency) == rules.base_currency
    )
    points_redeemed = int(redeemed.get("points_redeemed", 0))
    earned = int(Decimal(lifetime) / 100 * rules.points_per_unit)
    cashback = int(Decimal(lifetime) * rules.cashback_percent / 100) - int(
        redeemed.get("cashback_redeemed_minor", 0)
    )
    moments = sorted({o.at for o in orders} | {o.at + WINDOW for o in orders})
    tier = rules.tiers[0][0]
    since: datetime | None = None
    for moment in (m for m in moments if m <= now):
        current = rules.tier_for(rules.measure(orders, moment - WINDOW, moment))
        if current != tier:
            tier, since = current, moment
    spend = spend_between(orders, now - WINDOW, now, rules.base_currency)
    return Loyalty(
        points=earned - points_redeemed,
        points_redeemed=points_redeemed,
        cashback_minor=max(0, cashback),
        tier=tier,
        tier_since=since,
        spend_last_year_minor=spend,
        purchases_last_year=purchases_between(orders, now - WINDOW, now),
    )


@dataclass(frozen=True)
class Cart:
    """Whether the customer has added products since their last order (abandoned-cart
    audiences), and when."""

    open: bool
    last_added_at: datetime | None
    last_product_id: str


def cart(stored: StoredCart | Mapping[str, Mapping[str, Any]]) -> Cart:
    """The cart state from the stored ``cart.last_added`` / ``cart.last_ordered`` times (or
    the same times as a fold's timed fields hold them)."""
    added = stored.get("last_added") or {}
    ordered = stored.get("last_ordered") or {}
    added_at = added.get("at")
    ordered_at = ordered.get("at")
    is_open = added_at is not None and (ordered_at is None or added_at > ordered_at)
    return Cart(is_open, added_at, str(added.get("product_id", "")))
