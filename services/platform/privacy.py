"""The privacy-request contract every service that holds customer data implements.

Requests (``PrivacyRequest``: erase or export one customer) travel on
``lodestar.privacy.v1``; each service handles its own data and answers with one
``PrivacyCompleted`` on ``lodestar.privacy.completed.v1`` naming itself (with the export as
JSON for exports). Handling must be idempotent: a redelivered request is answered again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import events_pb2
from services.platform import topics
from services.platform.bus import Bus, Delivery
from services.platform.errors import PoisonMessage

log = logging.getLogger(__name__)


def completion(
    request: events_pb2.PrivacyRequest, service: str, export: dict[str, Any] | None = None
) -> events_pb2.PrivacyCompleted:
    """The answer ``service`` gives to ``request``."""
    done = Timestamp()
    done.FromDatetime(datetime.now(UTC))
    data = None
    if export is not None:
        data = Struct()
        data.update(export)
    return events_pb2.PrivacyCompleted(
        request_id=request.request_id,
        service=service,
        kind=request.kind,
        customer_id=request.customer_id,
        export=data,
        completed_at=done,
    )


Erase = Callable[[str], Awaitable[object]]
Export = Callable[[str], Awaitable[dict[str, Any]]]


class PrivacyHandler:
    """The privacy-request consumer every service uses: it calls the service's own
    ``erase`` / ``export`` for each request and answers on ``privacy.completed``."""

    def __init__(self, service: str, bus: Bus, erase: Erase, export: Export) -> None:
        self.service = service
        self.bus = bus
        self.erase = erase
        self.export = export

    async def __call__(self, batch: Sequence[Delivery[events_pb2.PrivacyRequest]]) -> None:
        """Act on each request (idempotent) and publish the answers."""
        answers = []
        for delivery in batch:
            request = delivery.message
            if not request.customer_id:
                raise PoisonMessage("privacy request without customer_id")
            if request.kind == events_pb2.PRIVACY_REQUEST_KIND_ERASE:
                await self.erase(request.customer_id)
                answer = completion(request, self.service)
            elif request.kind == events_pb2.PRIVACY_REQUEST_KIND_EXPORT:
                answer = completion(request, self.service, await self.export(request.customer_id))
            else:
                raise PoisonMessage(f"unknown privacy request kind {request.kind}")
            log.info(
                "privacy request handled",
                extra={
                    "fields": {
                        "request_id": request.request_id,
                        "customer_id": request.customer_id,
                        "kind": events_pb2.PrivacyRequestKind.Name(request.kind),
                    }
                },
            )
            answers.append((topics.PRIVACY_COMPLETED, request.customer_id, answer))
        await self.bus.publish_many(answers)
