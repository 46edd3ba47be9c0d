"""Per-request DataLoaders: each customer's identities and profile fetched once per query,
batched, however many fields and customers ask for them."""

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
    # Customer id -> their groups: one BatchListCustomerGroups per query.
    groups: DataLoader[str, list[profile_pb2.Group]]


def _absent_if_not_found(error: grpc.aio.AioRpcError) -> None:
    if error.code() != grpc.StatusCode.NOT_FOUND:
        raise from_rpc_error(error) from error


def make_loaders(clients: ServiceClients) -> Loaders:
    """Fresh loaders for one request (their cache must not outlive it)."""

    async def identities(ids: Sequence[str]) -> list[identity_pb2.CustomerIdentities | None]:
        async def one(customer_id: str) -> identity_pb2.CustomerIdentities | None:
            try:
                return await clients.identity.GetIdentities(
                    identity_pb2.GetIdentitiesRequest(customer_id=customer_id)
                )
            except grpc.aio.AioRpcError as error:
                _absent_if_not_found(error)
                return None

        return list(await asyncio.gather(*(one(i) for i in ids)))

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

    async def groups(ids: Sequence[str]) -> list[list[profile_pb2.Group]]:
        try:
            reply = await clients.profile.BatchListCustomerGroups(
                profile_pb2.BatchListCustomerGroupsRequest(customer_ids=list(ids))
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return [list(reply.customers[i].groups) if i in reply.customers else [] for i in ids]

    return Loaders(
        identities=DataLoader(identities),
        profiles=DataLoader(profiles),
        customer_ids=DataLoader(customer_ids),
        memberships=DataLoader(memberships),
        scores=DataLoader(scores),
        recommendations=DataLoader(recommendations),
        # Larger queries become several concurrent calls of the service's maximum size.
        wallet_passes=DataLoader(wallet_passes, max_batch_size=MAX_WALLET_CUSTOMERS),
        # The profile service answers at most this many customers per call.
        groups=DataLoader(groups, max_batch_size=MAX_GROUP_CUSTOMERS),
    )
