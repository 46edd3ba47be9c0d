"""gRPC servicer of the identity service: translates protos to the graph and back."""

from __future__ import annotations

from typing import Any

import grpc

from lodestar.v1 import common_pb2, identity_pb2, identity_pb2_grpc
from services.identity.graph import IdentifierValue, normalize
from services.identity.store import IdentityStore
from services.platform.errors import InvalidArgument, NotFound


def _customer(
    customer_id: str, identifiers: list[IdentifierValue]
) -> identity_pb2.CustomerIdentities:
    return identity_pb2.CustomerIdentities(
        customer_id=customer_id,
        identifiers=[common_pb2.Identifier(type=i.type, value=i.value) for i in identifiers],
    )


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    """Answers lookups over the identity graph."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store

    async def Lookup(
        self, request: identity_pb2.LookupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> identity_pb2.CustomerIdentities:
        """The customer owning ``request.identifier``, with all its identifiers."""
        if not request.HasField("identifier"):
            raise InvalidArgument("identifier is required")
        identifier = normalize(request.identifier.type, request.identifier.value)
        customer_id = await self.store.owner_of(identifier)
        if customer_id is None:
            raise NotFound(f"no customer has {identifier.type} {identifier.value!r}")
        return _customer(customer_id, await self.store.identities(customer_id))

    async def GetIdentities(
        self,
        request: identity_pb2.GetIdentitiesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> identity_pb2.CustomerIdentities:
        """Every identifier linked to ``request.customer_id``."""
        if not request.customer_id:
            raise InvalidArgument("customer_id is required")
        identifiers = await self.store.identities(request.customer_id)
        if not identifiers:
            raise NotFound(f"customer {request.customer_id!r} not found")
        return _customer(request.customer_id, identifiers)
