"""Privacy request records against a real MongoDB-wire server: pending until every expected
service answered, exports encrypted at rest, answers idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import KafkaWireServer
from lodestar.v1 import events_pb2, privacy_pb2, privacy_pb2_grpc
from services.platform import topics
from services.platform.bus import Bus, BusConfig, ensure_topics
from services.platform.errors import NotFound
from services.platform.mongo import Document, database
from services.platform.rpc import GrpcServer
from services.profile.api import PrivacyServicer
from services.profile.privacy_requests import PrivacyRequestSettings
from services.profile.server import PRIVACY_SERVICE_NAME
from tests.support.identity import cipher
from tests.support.kafka import read_all, unique
from tests.support.privacy import WirePrivacyRequests

EXPORT = events_pb2.PRIVACY_REQUEST_KIND_EXPORT
PENDING = privacy_pb2.PRIVACY_REQUEST_STATE_PENDING
DONE = privacy_pb2.PRIVACY_REQUEST_STATE_DONE
T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def requests(client: AsyncIOMotorClient[Document]) -> WirePrivacyRequests:
    db = database(client, unique("pr").replace("-", "_"), "profile")
    return WirePrivacyRequests(
        db, cipher(), PrivacyRequestSettings(services=("identity", "profile"))
    )


def answer(service: str, data: dict[str, Any] | None = None) -> events_pb2.PrivacyCompleted:
    done = events_pb2.PrivacyCompleted(
        request_id="r1", service=service, kind=EXPORT, customer_id="c-secret"
    )
    done.completed_at.FromDatetime(T0)
    if data is not None:
        export = Struct()
        export.update(data)
        done.export.CopyFrom(export)
    return done


async def test_a_request_is_done_only_when_every_expected_service_answered(
    requests: WirePrivacyRequests,
) -> None:
    await requests.open("r1", EXPORT, T0)
    status = await requests.status("r1")
    assert status.state == PENDING
    assert [(s.service, s.state) for s in status.services] == [
        ("identity", PENDING),
        ("profile", PENDING),
    ]
    await requests.answer(answer("profile", {"traits": {"email": "a@secret.example"}}))
    await requests.answer(answer("profile", {"traits": {"email": "a@secret.example"}}))
    status = await requests.status("r1")
    assert status.state == PENDING
    assert not status.HasField("export")  # exports show only once complete
    await requests.answer(answer("identity", {"identifiers": []}))
    status = await requests.status("r1")
    assert status.state == DONE
    assert status.completed_at.ToDatetime(UTC) == T0
    export = MessageToDict(status.export)
    assert export["profile"]["traits"]["email"] == "a@secret.example"
    # At rest: neither the export nor the customer id in clear.
    raw = str(await requests.requests.find_one({"_id": "r1"}))
    assert "a@secret.example" not in raw
    assert "c-secret" not in raw


async def test_an_answer_for_a_request_submitted_elsewhere_opens_its_record(
    requests: WirePrivacyRequests,
) -> None:
    await requests.answer(answer("identity"))
    status = await requests.status("r1")
    assert status.kind == EXPORT
    assert [(s.service, s.state) for s in status.services] == [
        ("identity", DONE),
        ("profile", PENDING),
    ]


async def test_an_unknown_request_is_not_found(requests: WirePrivacyRequests) -> None:
    with pytest.raises(NotFound, match="nope"):
        await requests.status("nope")


@pytest.fixture
async def privacy_stub(
    requests: WirePrivacyRequests, kafka_server: KafkaWireServer
) -> AsyncIterator[privacy_pb2_grpc.PrivacyServiceAsyncStub]:
    await ensure_topics(kafka_server.bootstrap_servers, {topics.PRIVACY: 6})
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, "test-privacy"))
    await bus.start()
    servicer = PrivacyServicer(requests.domain, bus)
    server = GrpcServer(
        "127.0.0.1",
        0,
        [PRIVACY_SERVICE_NAME],
        lambda s: privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(servicer, s),
        default_deadline_s=5,
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield privacy_pb2_grpc.PrivacyServiceStub(channel)
    await server.stop(0)
    await bus.stop()


async def test_submit_over_grpc_records_and_publishes_the_request(
    privacy_stub: privacy_pb2_grpc.PrivacyServiceAsyncStub, kafka_server: KafkaWireServer
) -> None:
    request_id = unique("req")
    submit = privacy_pb2.SubmitPrivacyRequestRequest(
        kind=EXPORT, customer_id="c-grpc", request_id=request_id
    )
    status = await privacy_stub.SubmitPrivacyRequest(submit)
    assert (status.request_id, status.state) == (request_id, PENDING)
    again = await privacy_stub.SubmitPrivacyRequest(submit)  # a retried submit: same request
    assert again.requested_at == status.requested_at
    got = await privacy_stub.GetPrivacyRequest(
        privacy_pb2.GetPrivacyRequestRequest(request_id=request_id)
    )
    assert [s.service for s in got.services] == ["identity", "profile"]
    published = [
        events_pb2.PrivacyRequest.FromString(r.value)
        for r in await read_all(kafka_server.bootstrap_servers, topics.PRIVACY)
    ]
    mine = [p for p in published if p.request_id == request_id]
    assert len(mine) == 2
    assert {(p.kind, p.customer_id) for p in mine} == {(EXPORT, "c-grpc")}


@pytest.mark.parametrize(
    ("submit", "named"),
    [
        (privacy_pb2.SubmitPrivacyRequestRequest(kind=EXPORT), "customer_id"),
        (privacy_pb2.SubmitPrivacyRequestRequest(customer_id="c1"), "kind"),
        (
            privacy_pb2.SubmitPrivacyRequestRequest(
                kind=EXPORT, customer_id="c1", request_id="x" * 129
            ),
            "request_id",
        ),
    ],
)
async def test_bad_submits_are_invalid_arguments_naming_the_field(
    privacy_stub: privacy_pb2_grpc.PrivacyServiceAsyncStub,
    submit: privacy_pb2.SubmitPrivacyRequestRequest,
    named: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await privacy_stub.SubmitPrivacyRequest(submit)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (failed.value.details() or "")


async def test_an_unknown_request_id_is_not_found_over_grpc(
    privacy_stub: privacy_pb2_grpc.PrivacyServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await privacy_stub.GetPrivacyRequest(
            privacy_pb2.GetPrivacyRequestRequest(request_id="missing")
        )
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
