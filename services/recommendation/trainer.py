"""A training run: read the interactions in the data window, fit off the event loop, store the
model as the next version, serve it.

Runs on a schedule (every replica tries; a lease in MongoDB lets one train), on demand (the
``Train`` RPC) and as a one-shot command. A run in progress on this replica is joined, not
repeated, and finishes (and is stored) even when the caller that started it gives up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.platform.errors import Unavailable
from services.recommendation.evaluation import POPULARITY, evaluate
from services.recommendation.interactions import Interaction, InteractionWeights
from services.recommendation.model import FactorModel, ModelInfo
from services.recommendation.serving import Recommendations
from services.recommendation.training import TrainingConfig, build_matrix, train_model

log = logging.getLogger(__name__)
LEASE = "training"


class NothingToTrain(Exception):
    """There are no interactions in the data window yet."""


@dataclass(frozen=True)
class TrainingPlan:
    """How and on what to train: hyper-parameters, weights, the data window, how many
    versions to keep, whether to measure a holdout, how long the lease lasts."""

    config: TrainingConfig
    weights: InteractionWeights
    window_days: int = 365
    keep_models: int = 3
    holdout_metrics: bool = False
    lease: timedelta = timedelta(hours=1)


class TrainingStore(Protocol):
    """What a training run reads and writes in the store."""

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Take the lease ``name`` unless another holder's is still running."""

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease back (only if still held by ``holder``)."""

    def stream_interactions(self, since: datetime) -> AsyncIterator[Interaction]:
        """The interactions at or after ``since``."""

    async def next_version(self) -> int:
        """One more than the newest stored version."""

    async def save_model(self, model: FactorModel) -> None:
        """Store a model as its version."""

    async def prune_models(self, keep: int) -> int:
        """Delete all but the ``keep`` newest versions."""

    async def customer_ids(self) -> set[str]:
        """Every customer that has interactions."""


def holder_name() -> str:
    """Who holds the lease: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Trainer:
    """Trains, stores and serves models."""

    def __init__(
        self,
        store: TrainingStore,
        serving: Recommendations,
        plan: TrainingPlan,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.serving = serving
        self.plan = plan
        self.clock = clock
        self.holder = holder or holder_name()
        self._running: asyncio.Task[ModelInfo] | None = None

    async def train(self, show_progress: bool = False) -> ModelInfo:
        """Train now (or join the run in progress here); :class:`Unavailable` while another
        replica trains, :class:`NothingToTrain` without interactions."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run(show_progress))
        return await asyncio.shield(self._running)

    async def scheduled(self) -> None:
        """The periodic job: train unless another replica is or there is nothing yet."""
        try:
            await self.train()
        except (NothingToTrain, Unavailable) as reason:
            log.info("scheduled training skipped", extra={"fields": {"reason": str(reason)}})

    async def _run(self, show_progress: bool) -> ModelInfo:
        now = self.clock()
        if not await self.store.acquire_lease(LEASE, self.holder, self.plan.lease, now):
            raise Unavailable("another replica is training a model; try again in a few minutes")
        try:
            since = now - timedelta(days=self.plan.window_days)
            interactions = [i async for i in self.store.stream_interactions(since)]
            if not interactions:
                raise NothingToTrain(
                    f"no interactions in the last {self.plan.window_days} days to train on"
                )
            version = await self.store.next_version()
            model = await asyncio.to_thread(self._fit, interactions, version, now, show_progress)
            # Customers erased (or merged away) while the model trained have no interactions
            # left: they must not be in it.
            model = model.without_customers(await self._gone(model))
            await self.store.save_model(model)
            # An erasure that finished between that check and the save is caught here.
            gone = await self._gone(model)
            if gone:
                await self.serving.erase_from_artifacts(gone)
                model = model.without_customers(gone)
            await self.store.prune_models(self.plan.keep_models)
            await self.serving.serve(model)
            return model.info
        finally:
            await self.store.release_lease(LEASE, self.holder)

    async def _gone(self, model: FactorModel) -> set[str]:
        current = await self.store.customer_ids()
        return {c for c in model.customer_ids if c not in current}

    def _fit(
        self, interactions: list[Interaction], version: int, now: datetime, show_progress: bool
    ) -> FactorModel:
        matrix = build_matrix(interactions, self.plan.weights, now)
        if self.plan.holdout_metrics:
            for result in evaluate(matrix.weights, [self.plan.config]):
                prefix = "popularity_" if result.model == POPULARITY else "holdout_"
                matrix.metrics.update({prefix + k: v for k, v in result.metrics.items()})
        return train_model(
            matrix,
            self.plan.config,
            self.plan.weights,
            version,
            now,
            show_progress=show_progress,
        )
