"""Consent in GraphQL: one purpose's decision, read on the customer and answered by
``setConsent`` (its own module so the mutations need not import the schema)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from lodestar.v1 import profile_pb2
from services.platform.timestamps import field_time


@strawberry.type(description="A consent decision for one purpose.")
class Consent:
    purpose: str
    state: str = strawberry.field(description="granted or denied")
    source: str
    at: datetime | None

    @staticmethod
    def of(message: profile_pb2.ConsentState) -> Consent:
        return Consent(
            purpose=message.purpose,
            state=message.state,
            source=message.source,
            at=field_time(message, "at"),
        )
