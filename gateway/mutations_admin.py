"""Mutations for privacy requests (``privacy``) and retraining the recommender (``admin``)."""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.mutation_errors import call, input_error, long_call_timeout
from gateway.privacy import PrivacyRequest, PrivacyRequestKind
from gateway.scopes import Scope, needs
from lodestar.v1 import privacy_pb2, recommendation_pb2
from services.platform.timestamps import field_time

_PRIVACY = [needs(Scope.PRIVACY)]
_REQUEST_ID = "Your id of the request: a retry with it is the same request."


async def _submit(
    info: Info, kind: PrivacyRequestKind, customer_id: str, request_id: str | None
) -> PrivacyRequest:
    if not customer_id.strip():
        raise input_error("customerId must not be empty", "$.customerId")
    status = await call(
        info.context["clients"].privacy.SubmitPrivacyRequest,
        lambda: privacy_pb2.SubmitPrivacyRequestRequest(
            kind=kind.value, customer_id=customer_id, request_id=request_id or ""
        ),
    )
    return PrivacyRequest.of(status)


@strawberry.type(description="The recommender model now serving.")
class RecommenderModel:
    version: int
    algorithm: str = strawberry.field(description="als or bpr")
    trained_at: datetime | None
    data_from: datetime | None
    data_to: datetime | None
    customers: int
    items: int
    interactions: int
    metrics: JSON = strawberry.field(
        description="Training statistics and, when enabled, holdout precision@10, map@10 and "
        "ndcg@10 beside the popularity baseline's."
    )
    parameters: JSON


@strawberry.type
class AdminMutation:
    @strawberry.field(
        description="Erase or export one customer across every service; follow it with "
        "privacyRequest(id). Passing your own requestId makes a retry the same request. "
        "Needs privacy.",
        permission_classes=_PRIVACY,
    )
    async def request_privacy(
        self,
        info: Info,
        *,
        kind: PrivacyRequestKind,
        customer_id: strawberry.ID,
        request_id: Annotated[str | None, strawberry.argument(description=_REQUEST_ID)] = None,
    ) -> PrivacyRequest:
        return await _submit(info, kind, str(customer_id), request_id)

    @strawberry.field(
        description="Erase one customer from every service (requestPrivacy(kind: ERASE)). "
        "Needs privacy.",
        permission_classes=_PRIVACY,
    )
    async def request_erasure(
        self,
        info: Info,
        *,
        customer_id: strawberry.ID,
        request_id: Annotated[str | None, strawberry.argument(description=_REQUEST_ID)] = None,
    ) -> PrivacyRequest:
        return await _submit(info, PrivacyRequestKind.ERASE, str(customer_id), request_id)

    @strawberry.field(
        description="Export what every service holds of one customer (requestPrivacy(kind: "
        "EXPORT)); the data is on privacyRequest(id) once DONE. Needs privacy.",
        permission_classes=_PRIVACY,
    )
    async def request_export(
        self,
        info: Info,
        *,
        customer_id: strawberry.ID,
        request_id: Annotated[str | None, strawberry.argument(description=_REQUEST_ID)] = None,
    ) -> PrivacyRequest:
        return await _submit(info, PrivacyRequestKind.EXPORT, str(customer_id), request_id)

    @strawberry.field(
        description="Retrain the recommender on the interactions so far and serve the new "
        "model. Needs admin.",
        permission_classes=[needs(Scope.ADMIN)],
    )
    async def train_recommender(self, info: Info) -> RecommenderModel:
        train = info.context["clients"].recommendation.Train
        timeout = long_call_timeout(info)
        rpc = train if timeout is None else partial(train, timeout=timeout)
        model = await call(rpc, recommendation_pb2.TrainRequest)
        return RecommenderModel(
            version=model.version,
            algorithm=model.algorithm,
            trained_at=field_time(model, "trained_at"),
            data_from=field_time(model, "data_from"),
            data_to=field_time(model, "data_to"),
            customers=model.customers,
            items=model.items,
            interactions=model.interactions,
            metrics=cast(JSON, dict(model.metrics)),
            parameters=cast(JSON, json.loads(model.parameters_json or "{}")),
        )
