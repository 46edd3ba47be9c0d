"""Per-request DataLoaders: each customer's identities and profile fetched once per query,
batched, however many fields and customers ask for them.

The batching invariant: a query over many customers makes at most one gRPC call per service
per field kind (a loader whose keys carry paging arguments makes one call per distinct
arguments, which a query writes once per field)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from strawberry.dataloader import DataLoader

from gateway.clients import ServiceClients
from gateway.errors import BAD_USER_INPUT, client_error, from_rpc_error
from lodestar.v1 import (
    common_pb2,
    identity_pb2,
    profile_pb2,
    recommendation_pb2,
    segmentation_pb2,
    wallet_pb2,
)

# The wallet service answers ListPasses for at most this many customers per call.
MAX_WALLET_CUSTOMERS = 1_000
MAX_GROUP_CUSTOMERS = 1_000
# The identity, profile and recommendation batch RPCs take at most this many keys per call.
MAX_BATCH = 1_000


@dataclass(frozen=True)
class TimelineKey:
    """One customer's timeline page: ``first`` events after ``after``, of ``names`` only
    (every event when empty)."""

    customer_id: str
    first: int
    after: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupsKey:
    """One customer's page of groups."""

    customer_id: str
    first: int
    after: str


@dataclass
class Loaders:
    """The loaders of one GraphQL request."""

    identities: DataLoader[str, identity_pb2.CustomerIdentities | None]
    profiles: DataLoader[str, profile_pb2.Profile | None]
    # (type, value) -> customer id: every identifier lookup of a query in one BatchLookup.
    customer_ids: DataLoader[tuple[str, str], str | None]
    memberships: DataLoader[str, segmentation_pb2.Memberships]
    scores: DataLoader[str, segmentation_pb2.CustomerScores | None]
    # (customer id, n) -> that many recommendations: one BatchRecommend per query.
    recommendations: DataLoader[tuple[str, int], recommendation_pb2.RecommendResponse]
    # Customer id -> their wallet passes, oldest first: one ListPasses per query.
    wallet_passes: DataLoader[str, list[wallet_pb2.WalletPass]]
    # A customer's page of groups: one BatchListCustomerGroups per query and page arguments.
    groups: DataLoader[GroupsKey, profile_pb2.CustomerGroups]
    # Timeline pages (the timeline and the orders list): one BatchListTimeline per query.
    timelines: DataLoader[TimelineKey, profile_pb2.ListTimelineResponse]
    # Item id -> catalog item: one GetItems per query.
    items: DataLoader[str, recommendation_pb2.CatalogItem | None]


def _absent_if_not_found(error: grpc.aio.AioRpcError) -> None:
    if error.code() != grpc.StatusCode.NOT_FOUND:
        raise from_rpc_error(error) from error


def make_loaders(clients: ServiceClients) -> Loaders:
    """Fresh loaders for one request (their cache must not outlive it)."""

    async def identities(ids: Sequence[str]) -> list[identity_pb2.CustomerIdentities | None]:
        try:
            reply = await clients.identity.BatchGetIdentities(
                identity_pb2.BatchGetIdentitiesRequest(customer_ids=list(ids))
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return [reply.identities.get(i) for i in ids]

    async def profiles(ids: Sequence[str]) -> list[profile_pb2.Profile | None]:
        try:
            reply = await clients.profile.BatchGetProfiles(
                profile_pb2.BatchGetProfilesRequest(customer_ids=list(ids))
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return [reply.profiles.get(i) for i in ids]

    async def customer_ids(
        keys: Sequence[tuple[str, str]],
    ) -> list[str | BaseException | None]:
        try:
            reply = await clients.identity.BatchLookup(
                identity_pb2.BatchLookupRequest(
                    identifiers=[common_pb2.Identifier(type=t, value=v) for t, v in keys]
                )
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return [
            client_error(r.error, BAD_USER_INPUT) if r.error else (r.customer_id or None)
            for r in reply.results
        ]

    async def memberships(ids: Sequence[str]) -> list[segmentation_pb2.Memberships]:
        try:
            reply = await clients.segmentation.MembershipsFor(
                segmentation_pb2.MembershipsForRequest(customer_ids=list(ids))
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return [reply.memberships.get(i, segmentation_pb2.Memberships()) for i in ids]

    async def scores(ids: Sequence[str]) -> list[segmentation_pb2.CustomerScores | None]:
        try:
            reply = await clients.segmentation.GetScores(
                segmentation_pb2.GetScoresRequest(customer_ids=list(ids))
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return [reply.scores.get(i) for i in ids]

    async def recommendations(
        keys: Sequence[tuple[str, int]],
    ) -> list[recommendation_pb2.RecommendResponse]:
        try:
            reply = await clients.recommendation.BatchRecommend(
                recommendation_pb2.BatchRecommendRequest(
                    requests=[
                        recommendation_pb2.RecommendRequest(
                            customer_id=c, n=n, exclude_purchased=True
                        )
                        for c, n in keys
                    ]
                )
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return list(reply.responses)

    async def wallet_passes(ids: Sequence[str]) -> list[list[wallet_pb2.WalletPass]]:
        try:
            reply = await clients.wallet.ListPasses(
                wallet_pb2.ListPassesRequest(customer_ids=list(ids))
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return [list(c.passes) for c in reply.customers]

    return Loaders(
        identities=DataLoader(identities, max_batch_size=MAX_BATCH),
        profiles=DataLoader(profiles, max_batch_size=MAX_BATCH),
        customer_ids=DataLoader(customer_ids),
        memberships=DataLoader(memberships),
        scores=DataLoader(scores),
        recommendations=DataLoader(recommendations),
        # Larger queries become several concurrent calls of the service's maximum size.
        wallet_passes=DataLoader(wallet_passes, max_batch_size=MAX_WALLET_CUSTOMERS),
        # The profile service answers at most this many customers per call.
        groups=DataLoader(lambda keys: _groups(clients, keys), max_batch_size=MAX_GROUP_CUSTOMERS),
        timelines=DataLoader(lambda keys: _timelines(clients, keys), max_batch_size=MAX_BATCH),
        items=DataLoader(lambda ids: _items(clients, ids), max_batch_size=MAX_BATCH),
    )


async def _groups(
    clients: ServiceClients, keys: Sequence[GroupsKey]
) -> list[profile_pb2.CustomerGroups]:
    """Pages of groups: one BatchListCustomerGroups per distinct page arguments."""
    # One call per distinct page arguments; a query writes them once per field.
    pages = sorted({(k.first, k.after) for k in keys})

    async def page(first: int, after: str) -> dict[str, profile_pb2.CustomerGroups]:
        ids = list(
            dict.fromkeys(k.customer_id for k in keys if (k.first, k.after) == (first, after))
        )
        reply = await clients.profile.BatchListCustomerGroups(
            profile_pb2.BatchListCustomerGroupsRequest(
                customer_ids=ids, page_size=first, page_token=after
            )
        )
        return dict(reply.customers)

    try:
        found = dict(zip(pages, await asyncio.gather(*(page(*p) for p in pages)), strict=True))
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from error
    empty = profile_pb2.CustomerGroups()
    return [found[(k.first, k.after)].get(k.customer_id, empty) for k in keys]


async def _timelines(
    clients: ServiceClients, keys: Sequence[TimelineKey]
) -> list[profile_pb2.ListTimelineResponse]:
    """Timeline pages of many customers in one BatchListTimeline."""
    request = profile_pb2.BatchListTimelineRequest(
        requests=[
            profile_pb2.ListTimelineRequest(
                customer_id=k.customer_id, page_size=k.first, page_token=k.after, names=k.names
            )
            for k in keys
        ]
    )
    try:
        reply = await clients.profile.BatchListTimeline(request)
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from error
    return list(reply.responses)


async def _items(
    clients: ServiceClients, ids: Sequence[str]
) -> list[recommendation_pb2.CatalogItem | None]:
    """Catalog items in one GetItems; unknown ones None."""
    try:
        reply = await clients.recommendation.GetItems(
            recommendation_pb2.GetItemsRequest(item_ids=list(ids))
        )
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from error
    return [reply.items.get(i) for i in ids]
