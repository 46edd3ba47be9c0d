"""The scheduled (and on-demand) scoring run: refit the purchase models on every customer's
orders, score everyone, store the scores where rules read them, and bring the segments
that read scores up to date."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from services.segmentation import clv, rfm
from services.segmentation.definitions import SegmentDefinitions
from services.segmentation.records import ProfileView, StoredScores
from services.segmentation.transactions import CustomerSummary

log = logging.getLogger(__name__)
RFM_ONLY = "rfm-1"


@dataclass(frozen=True)
class ScoringSettings:
    """Time unit of the purchase models (days) and the monthly discount of lifetime value."""

    time_unit_days: float = 7.0
    monthly_discount: float = clv.DEFAULT_MONTHLY_DISCOUNT_RATE


@dataclass(frozen=True)
class ScoringRun:
    """What one run did."""

    model_version: str
    customers: int
    parameters_json: str
    computed_at: datetime


class ScoreStore(Protocol):
    """What scoring needs of the store: the buyers' profile views in, the scores out."""

    def stream_buyers(self) -> AsyncIterator[ProfileView]:
        """The views of every customer with an order, in id order."""

    async def save_scores(self, scores: Sequence[StoredScores]) -> None:
        """Replace these customers' scores (and copy them where rules read them)."""


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def summary_of(view: ProfileView, now: datetime, unit_days: float) -> CustomerSummary | None:
    """A customer's purchase history in the models' terms, from their profile view."""
    orders = view.get("orders") or {}
    first, last = orders.get("first_order_at"), orders.get("last_order_at")
    if not orders.get("count") or first is None or last is None:
        return None
    first_day, last_day = _utc(first).date(), _utc(last).date()
    repeat_days = max(0, int(orders.get("purchase_days", 1)) - 1)
    return CustomerSummary(
        customer_id=view["_id"],
        frequency=repeat_days,
        recency=(last_day - first_day).days / unit_days,
        T=max((now.date() - first_day).days, (last_day - first_day).days) / unit_days,
        monetary=float(orders.get("repeat_average", 0.0)) if repeat_days else 0.0,
    )


def fit_and_score(
    summaries: Sequence[CustomerSummary],
    histories: Sequence[rfm.CustomerActivity],
    settings: ScoringSettings,
) -> tuple[str, dict[str, object], dict[str, clv.CustomerScores], dict[str, rfm.RfmScore]]:
    """The CPU-bound part of a run, pure (safe on a worker thread): the model version, its
    parameters, the purchase-model scores by customer and the RFM cells by customer."""
    model_version, parameters, values = RFM_ONLY, {}, {}
    try:
        model = clv.fit_customer_value(summaries, time_unit_days=settings.time_unit_days)
        values = clv.score_customers(
            summaries, model, monthly_discount_rate=settings.monthly_discount
        )
        model_version, parameters = model.model_version, model.as_dict()
    except ValueError as exc:
        # Too few repeat buyers to fit: RFM only, until there are.
        log.warning("purchase models not fitted", extra={"fields": {"reason": str(exc)}})
    return model_version, parameters, values, rfm.rfm_scores(histories)


class Scoring:
    """Computes and stores the predictive scores."""

    def __init__(
        self,
        store: ScoreStore,
        definitions: SegmentDefinitions,
        settings: ScoringSettings | None = None,
    ) -> None:
        self.store = store
        self.definitions = definitions
        self.settings = settings or ScoringSettings()

    async def recompute(self, now: datetime | None = None) -> ScoringRun:
        """Fit, score, store, re-evaluate the score segments."""
        now = now or datetime.now(UTC)
        unit = self.settings.time_unit_days
        summaries: list[CustomerSummary] = []
        histories: list[rfm.CustomerActivity] = []
        async for view in self.store.stream_buyers():
            summary = summary_of(view, now, unit)
            if summary is None:
                continue
            summaries.append(summary)
            orders = view["orders"]
            histories.append(
                rfm.CustomerActivity(
                    customer_id=view["_id"],
                    recency_days=(now - _utc(orders["last_order_at"])).days,
                    orders=int(orders["count"]),
                    monetary=float(orders.get("revenue", 0.0)),
                )
            )
        # The fit is seconds of CPU over a large population: off the event loop, so gRPC
        # calls and the consumers' heartbeats keep being answered while it runs.
        model_version, parameters, values, cells = await asyncio.to_thread(
            fit_and_score, summaries, histories, self.settings
        )
        docs: list[StoredScores] = []
        for customer in histories:
            score = cells[customer.customer_id]
            doc: StoredScores = {
                "_id": customer.customer_id,
                "recency": int(customer.recency_days),
                "frequency": customer.orders,
                "monetary": customer.monetary,
                "r_score": score.recency,
                "f_score": score.frequency,
                "m_score": score.monetary,
                "rfm_cell": str(score.cell),
                "model_version": model_version,
                "computed_at": now,
            }
            value = values.get(customer.customer_id)
            if value is not None:
                doc["p_alive"] = value.p_alive
                doc["expected_purchases_30d"] = value.expected_purchases_30d
                doc["expected_purchases_90d"] = value.expected_purchases_90d
                doc["clv_12m"] = value.clv_12m
            docs.append(doc)
        for start in range(0, len(docs), 500):
            await self.store.save_scores(docs[start : start + 500])
        await self.definitions.recheck_reading(["scores"], now)
        return ScoringRun(model_version, len(docs), json.dumps(parameters), now)
