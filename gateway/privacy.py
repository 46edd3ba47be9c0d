"""GraphQL for platform-wide privacy requests: submit an erasure or export and follow it
until every service that holds customer data has answered."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import cast

import grpc
import strawberry
from google.protobuf.json_format import MessageToDict
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.errors import from_rpc_error
from lodestar.v1 import events_pb2, privacy_pb2
from services.platform.timestamps import field_time


class PrivacyRequestKind(Enum):
    ERASE = events_pb2.PRIVACY_REQUEST_KIND_ERASE
    EXPORT = events_pb2.PRIVACY_REQUEST_KIND_EXPORT


class PrivacyRequestState(Enum):
    PENDING = privacy_pb2.PRIVACY_REQUEST_STATE_PENDING
    DONE = privacy_pb2.PRIVACY_REQUEST_STATE_DONE


strawberry.enum(PrivacyRequestKind, description="What a privacy request asks for.")
strawberry.enum(
    PrivacyRequestState, description="PENDING until every expected service has answered."
)


@strawberry.type(description="One service's part of a privacy request.")
class ServicePrivacyStatus:
    service: str
    state: PrivacyRequestState
    completed_at: datetime | None


@strawberry.type(description="A privacy request and where each service stands with it.")
class PrivacyRequest:
    id: strawberry.ID
    kind: PrivacyRequestKind
    state: PrivacyRequestState
    services: list[ServicePrivacyStatus]
    requested_at: datetime | None
    completed_at: datetime | None
    export: JSON | None = strawberry.field(
        description="For a finished export: each service's data under its name."
    )

    @staticmethod
    def of(status: privacy_pb2.PrivacyRequestStatus) -> PrivacyRequest:
        return PrivacyRequest(
            id=strawberry.ID(status.request_id),
            kind=PrivacyRequestKind(status.kind),
            state=PrivacyRequestState(status.state),
            services=[
                ServicePrivacyStatus(
                    service=s.service,
                    state=PrivacyRequestState(s.state),
                    completed_at=field_time(s, "completed_at"),
                )
                for s in status.services
            ],
            requested_at=field_time(status, "requested_at"),
            completed_at=field_time(status, "completed_at"),
            export=(
                cast(JSON, MessageToDict(status.export)) if status.HasField("export") else None
            ),
        )


async def privacy_request(info: Info, id: strawberry.ID) -> PrivacyRequest | None:
    """A privacy request by id; null when unknown or expired."""
    request = privacy_pb2.GetPrivacyRequestRequest(request_id=str(id))
    try:
        status = await info.context["clients"].privacy.GetPrivacyRequest(request)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise from_rpc_error(error) from error
    return PrivacyRequest.of(status)
