"""The field vocabulary of segment rules: the profile fields rules may test, what each holds
and the operators that apply to it, and the error a marketer must fix."""

from __future__ import annotations

from enum import Enum
from typing import Final

from services.platform.vocabulary import ENGAGEMENT_EVENTS, PURPOSES

OPERATORS: Final = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "contains",
    "exists",
    "between",
    "within_last_days",
)
COUNT_OPERATORS: Final = ("gte", "lte", "eq", "gt", "lt")


class FieldKind(Enum):
    """What a profile field holds, which decides the operators and values it accepts."""

    NUMBER = "a number"
    COUNTER = "a count"
    TEXT = "text"
    DATETIME = "a date and time"
    FLAG = "true or false"
    TEXT_LIST = "a list of text"
    CONSENT = "a consent state"
    ANY = "any value"
    PERSONAL = "personal data"


_NUMERIC_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "between", "exists")
ALLOWED_OPS: Final[dict[FieldKind, tuple[str, ...]]] = {
    FieldKind.NUMBER: _NUMERIC_OPS,
    FieldKind.COUNTER: _NUMERIC_OPS,
    FieldKind.TEXT: ("eq", "ne", "in", "contains", "exists"),
    FieldKind.DATETIME: ("gt", "gte", "lt", "lte", "between", "within_last_days", "exists"),
    FieldKind.FLAG: ("eq", "ne", "exists"),
    FieldKind.TEXT_LIST: ("contains", "exists"),
    FieldKind.CONSENT: ("eq", "ne", "in", "exists"),
    FieldKind.ANY: tuple(op for op in OPERATORS if op != "within_last_days"),
    FieldKind.PERSONAL: ("exists",),
}

_N, _C, _T, _D = FieldKind.NUMBER, FieldKind.COUNTER, FieldKind.TEXT, FieldKind.DATETIME
FIXED_FIELDS: Final[dict[str, FieldKind]] = {
    "first_seen": _D,
    "last_seen": _D,
    "orders.count": _C,
    "orders.revenue": _N,
    "orders.average_order_value": _N,
    "orders.first_order_at": _D,
    "orders.last_order_at": _D,
    "loyalty.tier": _T,
    "loyalty.points": _N,
    "loyalty.points_redeemed": _N,
    "loyalty.cashback_balance": _N,
    "loyalty.spend_last_12_months": _N,
    "loyalty.purchases_last_12_months": _N,
    "loyalty.tier_since": _D,
    "behaviour.session_count": _C,
    "behaviour.last_active_at": _D,
    "behaviour.cart_open": FieldKind.FLAG,
    "behaviour.cart_updated_at": _D,
    "behaviour.channels": FieldKind.TEXT_LIST,
    "behaviour.sources": FieldKind.TEXT_LIST,
    "behaviour.devices": FieldKind.TEXT_LIST,
    "behaviour.last_page": _T,
    "behaviour.last_screen": _T,
    "scores.recency": _N,
    "scores.frequency": _N,
    "scores.monetary": _N,
    "scores.rfm_cell": _T,
    "scores.p_alive": _N,
    "scores.expected_purchases_30d": _N,
    "scores.expected_purchases_90d": _N,
    "scores.clv_12m": _N,
    **{f"consent.{purpose}": FieldKind.CONSENT for purpose in PURPOSES},
    **{f"engagement.{kind}.count": _C for kind in ENGAGEMENT_EVENTS},
    **{f"engagement.{kind}.last_at": _D for kind in ENGAGEMENT_EVENTS},
}
# Profile paths at the granularity profile-change events announce them.
NAMED_FAMILIES: Final = ("traits", "event_counts")


class RuleError(ValueError):
    """A rule a marketer must fix: ``path`` points at the bad part (``rule.all[1].value``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def json_path(path: str) -> str:
    """A rule error's path as a JSON path of the rule itself: ``rule.all[1]`` -> ``$.all[1]``."""
    head, _, rest = path.partition("rule")
    if head or (rest and rest[0] not in ".["):
        return "$"
    return "$" + rest
