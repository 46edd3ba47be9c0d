"""gRPC servicer of the identity service: protos in, the resolver and store, protos out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import common_pb2, identity_pb2, identity_pb2_grpc
from services.identity.graph import GraphIdentifier
from services.identity.records import StoredIdentifier
from services.identity.resolution import EventIdentifiers, Resolver
from services.identity.store import IdentityStore
from services.platform.errors import InvalidArgument, NotFound
from services.platform.validation import check_id, check_ids

Context = grpc.aio.ServicerContext[Any, Any]
MAX_BATCH_LOOKUP = 1_000
MAX_TYPE_LENGTH = 64


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _identities(customer_id: str, found: list[StoredIdentifier]) -> identity_pb2.CustomerIdentities:
    return identity_pb2.CustomerIdentities(
        customer_id=customer_id,
        identifiers=[common_pb2.Identifier(type=i.type, value=i.value) for i in found],
        records=[
            identity_pb2.IdentityRecord(
                identifier=common_pb2.Identifier(type=i.type, value=i.value),
                first_seen=_stamp(i.first_seen),
                last_seen=_stamp(i.last_seen),
                source=i.source,
            )
            for i in found
        ],
    )


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    """Resolution, lookups, merge history and erasure over the identity graph."""

    def __init__(self, store: IdentityStore, resolver: Resolver) -> None:
        self.store = store
        self.resolver = resolver

    def _key(self, identifier: common_pb2.Identifier) -> GraphIdentifier:
        check_id("identifier type", identifier.type, required=False, limit=MAX_TYPE_LENGTH)
        return self.store.identifier_of(identifier.type, identifier.value)

    async def Resolve(
        self, request: identity_pb2.ResolveRequest, context: Context
    ) -> identity_pb2.ResolveResponse:
        """Resolve one set of identifiers to a customer, creating or merging as the rules say."""
        if not request.identifiers:
            raise InvalidArgument("identifiers: at least one is required")
        for identifier in request.identifiers:
            check_id("identifier type", identifier.type, required=False, limit=MAX_TYPE_LENGTH)
        check_id("event_id", request.event_id, required=False)
        check_id("source", request.source, required=False)
        event = EventIdentifiers(
            event_id=request.event_id or str(uuid.uuid4()),
            raw=[(i.type, i.value) for i in request.identifiers],
            source=request.source or "api",
            at=datetime.now(UTC),
        )
        outcome = await self.resolver.resolve([event])
        return identity_pb2.ResolveResponse(
            customer_id=outcome.customer_ids[0],
            created=outcome.created[0],
            merged_ids=[m for merge in outcome.merges for m in merge.merged_ids],
            conflicts=outcome.conflicts,
        )

    async def Lookup(
        self, request: identity_pb2.LookupRequest, context: Context
    ) -> identity_pb2.CustomerIdentities:
        """The customer owning ``request.identifier``, with all its identifiers."""
        if not request.HasField("identifier"):
            raise InvalidArgument("identifier is required")
        customer_id = await self.store.owner_of(self._key(request.identifier))
        if customer_id is None:
            raise NotFound(f"no customer has this {request.identifier.type}")
        return _identities(customer_id, await self.store.identities(customer_id))

    async def BatchLookup(
        self, request: identity_pb2.BatchLookupRequest, context: Context
    ) -> identity_pb2.BatchLookupResponse:
        """One result per identifier, in order: the customer id, empty, or the reason."""
        if len(request.identifiers) > MAX_BATCH_LOOKUP:
            raise InvalidArgument(f"identifiers: at most {MAX_BATCH_LOOKUP} per call")
        keys: list[GraphIdentifier | None] = []
        errors: list[str] = []
        for identifier in request.identifiers:
            try:
                keys.append(self._key(identifier))
                errors.append("")
            except InvalidArgument as exc:
                keys.append(None)
                errors.append(str(exc))
        owners = await self.store.owners_of([k for k in keys if k is not None])
        return identity_pb2.BatchLookupResponse(
            results=[
                identity_pb2.LookupResult(
                    identifier=identifier,
                    customer_id="" if key is None else owners.get(key.key, ""),
                    error=error,
                )
                for identifier, key, error in zip(request.identifiers, keys, errors, strict=True)
            ]
        )

    async def GetIdentities(
        self, request: identity_pb2.GetIdentitiesRequest, context: Context
    ) -> identity_pb2.CustomerIdentities:
        """Every identifier of ``request.customer_id`` (or of its survivor after a merge)."""
        current = await self._current(request.customer_id)
        return _identities(current, await self.store.identities(current))

    async def BatchGetIdentities(
        self, request: identity_pb2.BatchGetIdentitiesRequest, context: Context
    ) -> identity_pb2.BatchGetIdentitiesResponse:
        """The identities of many customers (merged ids: their survivor's); unknown and
        erased ids are left out."""
        ids = check_ids("customer_ids", request.customer_ids, most=MAX_BATCH_LOOKUP)
        current, found = await self.store.identities_of(ids)
        return identity_pb2.BatchGetIdentitiesResponse(
            identities={
                asked: _identities(now, found.get(now, [])) for asked, now in current.items()
            }
        )

    async def GetMergeHistory(
        self, request: identity_pb2.GetMergeHistoryRequest, context: Context
    ) -> identity_pb2.MergeHistory:
        """The audit trail of merges involving the customer, newest first."""
        check_id("customer_id", request.customer_id)
        merges = await self.store.merge_history(request.customer_id)
        if not merges and await self.store.current_id(request.customer_id) is None:
            raise NotFound(f"customer {request.customer_id!r} not found")
        return identity_pb2.MergeHistory(
            customer_id=request.customer_id,
            merges=[
                identity_pb2.MergeRecord(
                    merge_id=m["_id"],
                    survivor_id=m["survivor_id"],
                    merged_ids=m["merged_ids"],
                    caused_by_event_id=m["caused_by_event_id"],
                    at=_stamp(m["at"]),
                )
                for m in merges
            ],
        )

    async def Erase(
        self, request: identity_pb2.EraseRequest, context: Context
    ) -> identity_pb2.EraseResponse:
        """Forget every identifier of the customer."""
        current = await self._current(request.customer_id)
        removed = await self.store.erase(current, datetime.now(UTC))
        return identity_pb2.EraseResponse(customer_id=current, identifiers_removed=removed)

    async def _current(self, customer_id: str) -> str:
        check_id("customer_id", customer_id)
        current = await self.store.current_id(customer_id)
        if current is None:
            raise NotFound(f"customer {customer_id!r} not found")
        return current
