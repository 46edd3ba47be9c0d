"""``requestErasure`` / ``requestExport`` / ``requestPrivacy`` and ``trainRecommender`` in
process against fake stubs: each maps its RPC; bad ids and service errors are coded."""

from __future__ import annotations

import grpc

from lodestar.v1 import events_pb2, privacy_pb2, recommendation_pb2
from tests.unit.gateway.mutation_support import SETTINGS, graphql, only_error, rpc_error

ERASE = 'mutation($id: ID!) { requestErasure(customerId: $id, requestId: "r-1") { id kind } }'
EXPORT = "mutation($id: ID!) { requestExport(customerId: $id) { id kind state } }"
TRAIN = """
mutation { trainRecommender { version algorithm customers items interactions metrics parameters
                              trainedAt } }
"""


class FakePrivacy:
    def __init__(self, error: grpc.aio.AioRpcError | None = None) -> None:
        self.error = error
        self.requests: list[privacy_pb2.SubmitPrivacyRequestRequest] = []

    async def SubmitPrivacyRequest(  # noqa: N802 - fakes carry the RPC names
        self, request: privacy_pb2.SubmitPrivacyRequestRequest
    ) -> privacy_pb2.PrivacyRequestStatus:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return privacy_pb2.PrivacyRequestStatus(
            request_id=request.request_id or "generated",
            kind=request.kind,
            state=privacy_pb2.PRIVACY_REQUEST_STATE_PENDING,
        )


class FakeRecommendation:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    async def Train(  # noqa: N802
        self,
        request: recommendation_pb2.TrainRequest,
        timeout: float | None = None,  # noqa: ASYNC109 - the stub's keyword
    ) -> recommendation_pb2.ModelInfo:
        self.timeouts.append(timeout)
        info = recommendation_pb2.ModelInfo(
            version=4,
            algorithm="als",
            customers=10,
            items=20,
            interactions=300,
            metrics={"seconds": 1.5},
            parameters_json='{"factors": 32}',
        )
        info.trained_at.FromSeconds(1_700_000_000)
        return info


class Clients:
    def __init__(self, privacy: FakePrivacy | None = None) -> None:
        self.privacy = privacy or FakePrivacy()
        self.recommendation = FakeRecommendation()
        self.settings: object = None


async def test_erasure_and_export_submit_their_kind() -> None:
    privacy = FakePrivacy()
    body = await graphql(Clients(privacy), ERASE, {"id": "c-1"})
    assert body["data"]["requestErasure"] == {"id": "r-1", "kind": "ERASE"}
    body = await graphql(Clients(privacy), EXPORT, {"id": "c-1"})
    assert body["data"]["requestExport"] == {
        "id": "generated",
        "kind": "EXPORT",
        "state": "PENDING",
    }
    assert [r.kind for r in privacy.requests] == [
        events_pb2.PRIVACY_REQUEST_KIND_ERASE,
        events_pb2.PRIVACY_REQUEST_KIND_EXPORT,
    ]


async def test_bad_customer_ids_are_bad_user_input() -> None:
    privacy = FakePrivacy()
    for customer_id in (" ", "c\ud800"):
        error = only_error(await graphql(Clients(privacy), ERASE, {"id": customer_id}))
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert privacy.requests == []
    privacy = FakePrivacy(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "customer_id: NUL"))
    error = only_error(await graphql(Clients(privacy), ERASE, {"id": "c\u0000"}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_train_recommender_answers_the_new_model() -> None:
    body = await graphql(Clients(), TRAIN)
    assert "errors" not in body, body
    assert body["data"]["trainRecommender"] == {
        "version": 4,
        "algorithm": "als",
        "customers": 10,
        "items": 20,
        "interactions": 300,
        "metrics": {"seconds": 1.5},
        "parameters": {"factors": 32},
        "trainedAt": "2023-11-14T22:13:20+00:00",
    }


async def test_training_gets_the_long_call_deadline_not_a_reads() -> None:
    clients = Clients()
    clients.settings = SETTINGS
    body = await graphql(clients, TRAIN)
    assert "errors" not in body, body
    assert clients.recommendation.timeouts == [SETTINGS.graphql_long_call_timeout_s]
    assert SETTINGS.graphql_long_call_timeout_s > SETTINGS.grpc_timeout_s
