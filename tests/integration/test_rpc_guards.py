"""Doors of the gRPC services an outside probe knocked on, over real channels: oversized ids,
error details past gRPC's trailer limit, rules nested thousands deep, and bursts of calls the
client cancels or lets time out."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import MongoWireServer
from lodestar.v1 import (
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.identity.api import IdentityServicer
from services.identity.server import SERVICE_NAME as IDENTITY
from services.identity.store import IdentityStore
from services.platform.errors import MAX_DETAILS, NotFound
from services.platform.mongo import Document, database, mongo_client
from services.platform.rpc import GrpcServer
from services.profile.api import ProfileServicer
from services.profile.server import SERVICE_NAME as PROFILE
from services.profile.store import ProfileStore
from services.segmentation.api import SegmentationServicer
from services.segmentation.audience import Audiences
from services.segmentation.definitions import SegmentDefinitions
from services.segmentation.records import StoredSegment
from services.segmentation.rules import MAX_JSON_DEPTH
from services.segmentation.scoring import Scoring
from services.segmentation.server import SERVICE_NAME as SEGMENTATION
from services.segmentation.store import SegmentationStore
from services.wallet.api import WalletServicer
from services.wallet.live import LiveUpdates
from services.wallet.passes import WalletPasses
from services.wallet.server import SERVICE_NAME as WALLET
from services.wallet.store import WalletStore
from tests.support.identity import fresh_store, resolver
from tests.support.kafka import unique

HUGE = "c" * 100_000
DEEP_RULE = '{"not": ' * 3_000 + '{"field": "orders.count", "op": "gt", "value": 1}' + "}" * 3_000


class Stubs:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        identity: IdentityStore,
        profile: ProfileStore,
        segmentation: SegmentationStore,
    ) -> None:
        self.identity = identity_pb2_grpc.IdentityServiceStub(channel)
        self.profile = profile_pb2_grpc.ProfileServiceStub(channel)
        self.segmentation = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        self.wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        self.identity_store = identity
        self.profile_store = profile
        self.segmentation_store = segmentation


@pytest.fixture
async def stubs(mongo_server: MongoWireServer) -> AsyncIterator[Stubs]:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    prefix = unique("guards").replace("-", "_")
    identity = await fresh_store(client)
    profile = ProfileStore(database(client, prefix, "profile"), 100)
    segmentation = SegmentationStore(database(client, prefix, "segmentation"), 30 * 86_400)
    definitions = SegmentDefinitions(
        segmentation, Audiences(segmentation, None), frozenset({"email"})
    )
    # Passes are never signed here: every call below is refused before one would be.
    wallet = WalletStore(client[f"{prefix}_wallet"])
    passes = WalletPasses(wallet, None, "http://127.0.0.1:9")  # type: ignore[arg-type]

    def register(server: grpc.aio.Server) -> None:
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(
            IdentityServicer(identity, resolver(identity)), server
        )
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(profile), server)
        segmentation_pb2_grpc.add_SegmentationServiceServicer_to_server(
            SegmentationServicer(definitions, segmentation, Scoring(segmentation, definitions)),
            server,
        )
        wallet_pb2_grpc.add_WalletServiceServicer_to_server(
            WalletServicer(passes, LiveUpdates(passes, wallet)), server
        )

    server = GrpcServer(
        "127.0.0.1", 0, [IDENTITY, PROFILE, SEGMENTATION, WALLET], register, default_deadline_s=5
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Stubs(channel, identity, profile, segmentation)
    await server.stop(0)
    client.close()


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


# -- C: oversized ids are refused by name, never echoed ------------------------------------


@pytest.mark.parametrize(
    ("method", "make_call"),
    [
        (
            "identity.GetIdentities",
            lambda s: s.identity.GetIdentities(
                identity_pb2.GetIdentitiesRequest(customer_id=HUGE), timeout=10
            ),
        ),
        (
            "identity.GetMergeHistory",
            lambda s: s.identity.GetMergeHistory(
                identity_pb2.GetMergeHistoryRequest(customer_id=HUGE), timeout=10
            ),
        ),
        (
            "identity.Erase",
            lambda s: s.identity.Erase(identity_pb2.EraseRequest(customer_id=HUGE), timeout=10),
        ),
        (
            "identity.Resolve",
            lambda s: s.identity.Resolve(
                identity_pb2.ResolveRequest(
                    identifiers=[common_pb2.Identifier(type="user_id", value="u-1")],
                    event_id=HUGE,
                ),
                timeout=10,
            ),
        ),
        (
            "profile.GetProfile",
            lambda s: s.profile.GetProfile(
                profile_pb2.GetProfileRequest(customer_id=HUGE), timeout=10
            ),
        ),
        (
            "profile.Export",
            lambda s: s.profile.Export(profile_pb2.ExportRequest(customer_id=HUGE), timeout=10),
        ),
        (
            "profile.BatchGetProfiles",
            lambda s: s.profile.BatchGetProfiles(
                profile_pb2.BatchGetProfilesRequest(customer_ids=["ok", HUGE]), timeout=10
            ),
        ),
        (
            "segmentation.GetSegment",
            lambda s: s.segmentation.GetSegment(
                segmentation_pb2.GetSegmentRequest(id=HUGE), timeout=10
            ),
        ),
        (
            "segmentation.Members",
            lambda s: s.segmentation.Members(
                segmentation_pb2.MembersRequest(segment_id=HUGE), timeout=10
            ),
        ),
        (
            "segmentation.MembershipsFor",
            lambda s: s.segmentation.MembershipsFor(
                segmentation_pb2.MembershipsForRequest(customer_ids=["ok", HUGE]), timeout=10
            ),
        ),
        (
            "segmentation.GetScores",
            lambda s: s.segmentation.GetScores(
                segmentation_pb2.GetScoresRequest(customer_ids=[HUGE]), timeout=10
            ),
        ),
        (
            "wallet.GetPass",
            lambda s: s.wallet.GetPass(wallet_pb2.GetPassRequest(serial_number=HUGE), timeout=10),
        ),
        (
            "wallet.VoidPass",
            lambda s: s.wallet.VoidPass(wallet_pb2.VoidPassRequest(serial_number=HUGE), timeout=10),
        ),
        (
            "wallet.ListPasses",
            lambda s: s.wallet.ListPasses(
                wallet_pb2.ListPassesRequest(customer_ids=["ok", HUGE]), timeout=10
            ),
        ),
        (
            "wallet.SendMessage",
            lambda s: s.wallet.SendMessage(
                wallet_pb2.SendMessageRequest(customer_id=HUGE, body="hi"), timeout=10
            ),
        ),
        (
            "wallet.IssuePass",
            lambda s: s.wallet.IssuePass(
                wallet_pb2.IssuePassRequest(
                    customer_id="c-1",
                    kind=wallet_pb2.PASS_KIND_COUPON,
                    offer_id=HUGE,
                ),
                timeout=10,
            ),
        ),
    ],
)
async def test_a_100_kb_id_is_invalid_argument_naming_the_field_without_echoing_it(
    stubs: Stubs, method: str, make_call: Any
) -> None:
    error = await _refused(make_call(stubs))
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.code(), details)
    assert "longer than" in details, details
    assert "ccccccccc" not in details
    assert len(details) <= MAX_DETAILS


async def test_an_oversized_identifier_value_is_refused_without_echo(stubs: Stubs) -> None:
    error = await _refused(
        stubs.identity.Lookup(
            identity_pb2.LookupRequest(
                identifier=common_pb2.Identifier(type="user_id", value=HUGE)
            ),
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ccccccccc" not in (error.details() or "")


async def test_error_details_are_bounded_where_errors_become_statuses(stubs: Stubs) -> None:
    async def chatty(segment_id: str) -> StoredSegment | None:
        raise NotFound(f"segment {'x' * 100_000} does not exist")

    stubs.segmentation_store.get_segment = chatty  # type: ignore[method-assign]
    error = await _refused(
        stubs.segmentation.GetSegment(segmentation_pb2.GetSegmentRequest(id="s-1"), timeout=10)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    details = error.details() or ""
    assert details.startswith("segment xxx")
    assert len(details) <= MAX_DETAILS


# -- B: nesting past the limits is INVALID_ARGUMENT, never a RecursionError -----------------


async def test_a_rule_nested_3000_deep_is_invalid_argument_naming_the_limit(stubs: Stubs) -> None:
    for call in (
        stubs.segmentation.CreateSegment(
            segmentation_pb2.CreateSegmentRequest(name="Deep", rule_json=DEEP_RULE), timeout=10
        ),
        stubs.segmentation.UpdateSegment(
            segmentation_pb2.UpdateSegmentRequest(id="deep", rule_json=DEEP_RULE), timeout=10
        ),
    ):
        error = await _refused(call)
        details = error.details() or ""
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert str(MAX_JSON_DEPTH) in details, details


async def test_a_deep_rule_on_an_existing_segment_is_invalid_argument(stubs: Stubs) -> None:
    rule = json.dumps({"field": "orders.count", "op": "gt", "value": 1})
    await stubs.segmentation.CreateSegment(
        segmentation_pb2.CreateSegmentRequest(id="flat", name="Flat", rule_json=rule), timeout=10
    )
    for deep in (DEEP_RULE, "[" * 3_000 + "]" * 3_000):
        error = await _refused(
            stubs.segmentation.UpdateSegment(
                segmentation_pb2.UpdateSegmentRequest(id="flat", rule_json=deep), timeout=10
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"deeper than {MAX_JSON_DEPTH}" in (error.details() or "")


async def test_a_timeline_page_token_nested_3000_deep_is_invalid_argument(stubs: Stubs) -> None:
    token = base64.urlsafe_b64encode(("[" * 3_000 + "]" * 3_000).encode()).decode()
    error = await _refused(
        stubs.profile.ListTimeline(
            profile_pb2.ListTimelineRequest(customer_id="c-1", page_token=token), timeout=10
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (error.details() or "")


# -- D: a burst of calls the client gives up on is handled quietly --------------------------


async def test_a_burst_of_cancelled_and_expired_calls_logs_no_error(
    stubs: Stubs, caplog: pytest.LogCaptureFixture
) -> None:
    started: set[str] = set()

    async def finishes_as_the_client_gives_up(segment_id: str) -> StoredSegment | None:
        # Work that completes just as the call ends: the answer (NOT_FOUND) comes too late.
        started.add(segment_id)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return None
        return None

    stubs.segmentation_store.get_segment = finishes_as_the_client_gives_up  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG)
    for name in ("grpc", "grpc._cython.cygrpc"):
        logging.getLogger(name).setLevel(logging.DEBUG)

    async def expiring(n: int) -> None:
        call = stubs.segmentation.GetSegment(
            segmentation_pb2.GetSegmentRequest(id=f"s-{n}"), timeout=0.2
        )
        error = await _refused(call)
        # The server's own deadline may end the work a moment earlier: then its answer wins.
        assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND)

    async def cancelled(n: int) -> None:
        call = stubs.segmentation.GetSegment(segmentation_pb2.GetSegmentRequest(id=f"c-{n}"))
        # Cancelled once the server is inside the work (on a loaded machine 0.1 s may pass
        # before the handler starts; then there is no late answer to send).
        for _ in range(1_000):
            if f"c-{n}" in started:
                break
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    await asyncio.gather(*(expiring(n) for n in range(150)), *(cancelled(n) for n in range(150)))
    # Let the server finish every call it was still answering.
    await asyncio.sleep(1)
    # The server keeps serving.
    rule = json.dumps({"field": "orders.count", "op": "gt", "value": 1})
    await stubs.segmentation.CreateSegment(
        segmentation_pb2.CreateSegmentRequest(id="after", name="After", rule_json=rule),
        timeout=10,
    )
    ended = [r for r in caplog.records if r.getMessage() == "call ended before its status was sent"]
    # The cancelled calls' NOT_FOUND went to calls grpc had closed: the send failed, quietly.
    assert ended
    assert all(r.levelno == logging.INFO and not r.exc_info for r in ended)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if "Abort already called" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info and "Abort already" in str(r.exc_info[1])]
    assert errors == [], [f"{r.name}: {r.getMessage()[:200]}" for r in errors[:5]]
