"""The privacy-request contract every service that holds customer data implements.

Requests (``PrivacyRequest``: erase or export one customer) travel on
``lodestar.privacy.v1``; each service handles its own data and answers with one
``PrivacyCompleted`` on ``lodestar.privacy.completed.v1`` naming itself (with the export as
JSON for exports). Handling must be idempotent: a redelivered request is answered again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import events_pb2


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
