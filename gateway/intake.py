"""The one way an event enters the platform, whichever door it came through (the Segment-spec
HTTP API or a GraphQL mutation): validated and built by :func:`gateway.segment.parse_call`,
then produced to ``lodestar.events.raw.v1`` and acknowledged by Kafka."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.client_ip import client_address, networks
from gateway.segment import parse_call
from gateway.settings import GatewaySettings
from lodestar.v1 import events_pb2
from services.platform import metrics, topics
from services.platform.bus import Bus
from services.platform.errors import BusUnavailable

log = logging.getLogger(__name__)


class EventIntake:
    """Builds events from Segment calls and produces them; shared by every door."""

    def __init__(self, settings: GatewaySettings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.trusted_proxies = networks(settings.ingest_trusted_proxies)

    def client_ip(self, peer: str | None, forwarded: str) -> str:
        """The sender's address (see :mod:`gateway.client_ip`)."""
        return client_address(peer, forwarded, self.trusted_proxies)

    def build(
        self,
        body: Any,
        kind: str,
        *,
        client_ip: str,
        received_at: datetime | None = None,
        max_bytes: int = 0,
    ) -> tuple[str, events_pb2.Event]:
        """One call's ``(kafka_key, event)``; raises :class:`gateway.segment.InvalidEvent`
        naming the bad field. ``max_bytes`` bounds the call's JSON (0: the door measured it)."""
        at = received_at or datetime.now(UTC)
        try:
            return parse_call(body, kind, at, max_bytes=max_bytes, client_ip=client_ip)
        except ValueError:
            metrics.INGEST_EVENTS.labels(kind, "invalid").inc()
            metrics.INGEST_REJECTED.labels(kind, "invalid_event").inc()
            raise

    async def produce(self, kind: str, calls: Sequence[tuple[str, events_pb2.Event]]) -> None:
        """Produce ``calls`` to the raw events topic; :class:`BusUnavailable` when Kafka did
        not take them."""
        try:
            await self.bus.publish_many([(topics.EVENTS_RAW, key, event) for key, event in calls])
        except BusUnavailable as exc:
            log.warning("produce failed", extra={"fields": {"error": repr(exc)}})
            metrics.INGEST_EVENTS.labels(kind, "unavailable").inc()
            raise
        metrics.INGEST_EVENTS.labels(kind, "accepted").inc(len(calls))
