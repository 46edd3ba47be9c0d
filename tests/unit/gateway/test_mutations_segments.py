"""``createSegment`` / ``updateSegment`` / ``deleteSegment`` / ``recomputeScores`` against a
segmentation servicer served by the platform's real gRPC server (interceptors included) and
validating rules as the service does: a bad rule is BAD_USER_INPUT whose ``extensions.path``
is the JSON path of the bad part of the rule, carried in the status's trailing metadata."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from lodestar.v1 import segmentation_pb2, segmentation_pb2_grpc
from services.platform.errors import NotFound
from services.platform.rpc import GrpcServer
from services.segmentation.definitions import SegmentDefinitions
from services.segmentation.rules import json_path
from tests.unit.gateway.mutation_support import graphql, only_error

CREATE = """
mutation($name: String!, $rule: JSON!, $id: ID) {
  createSegment(name: $name, rule: $rule, id: $id) { id name version status rule }
}
"""
UPDATE = """
mutation($id: ID!, $rule: JSON) { updateSegment(id: $id, rule: $rule) { id version rule } }
"""
DELETE = "mutation($id: ID!) { deleteSegment(id: $id) { id membersExited } }"
RECOMPUTE = "mutation { recomputeScores { modelVersion customersScored parameters } }"
GOOD = {"all": [{"field": "traits.plan", "op": "eq", "value": "pro"}]}


class Segmentation(segmentation_pb2_grpc.SegmentationServiceServicer):
    """Validates rules with the service's own code; keeps segments in memory."""

    def __init__(self) -> None:
        store = SimpleNamespace(event_retention_s=90 * 86_400)
        self.definitions = SegmentDefinitions(cast(Any, store), cast(Any, None), frozenset())
        self.segments: dict[str, segmentation_pb2.Segment] = {}

    async def CreateSegment(  # noqa: N802 - servicers carry the RPC names
        self, request: segmentation_pb2.CreateSegmentRequest, context: Any
    ) -> segmentation_pb2.Segment:
        _, canonical = self.definitions._rule(request.rule_json)
        segment = segmentation_pb2.Segment(
            id=request.id or "made-from-name", name=request.name, version=1, rule_json=canonical
        )
        self.segments[segment.id] = segment
        return segment

    async def UpdateSegment(  # noqa: N802
        self, request: segmentation_pb2.UpdateSegmentRequest, context: Any
    ) -> segmentation_pb2.Segment:
        if request.id not in self.segments:
            raise NotFound(f"no segment {request.id!r}")
        _, canonical = self.definitions._rule(request.rule_json)
        segment = self.segments[request.id]
        segment.version += 1
        segment.rule_json = canonical
        return segment

    async def DeleteSegment(  # noqa: N802
        self, request: segmentation_pb2.DeleteSegmentRequest, context: Any
    ) -> segmentation_pb2.DeleteSegmentResponse:
        if self.segments.pop(request.id, None) is None:
            raise NotFound(f"no segment {request.id!r}")
        return segmentation_pb2.DeleteSegmentResponse(id=request.id, members_exited=3)

    async def RecomputeScores(  # noqa: N802
        self, request: segmentation_pb2.RecomputeScoresRequest, context: Any
    ) -> segmentation_pb2.RecomputeScoresResponse:
        return segmentation_pb2.RecomputeScoresResponse(
            model_version="m-1", customers_scored=12, parameters_json='{"r": 0.5}'
        )


class Clients:
    def __init__(self, stub: segmentation_pb2_grpc.SegmentationServiceAsyncStub) -> None:
        self.segmentation = stub


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    # The RPCs it leaves out answer UNIMPLEMENTED, as the generated base class makes them.
    servicer = Segmentation()  # type: ignore[abstract]
    server = GrpcServer(
        "127.0.0.1",
        0,
        ["lodestar.v1.SegmentationService"],
        lambda s: segmentation_pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, s),
        default_deadline_s=5,
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Clients(cast(Any, segmentation_pb2_grpc.SegmentationServiceStub(channel)))
    await server.stop(0)


async def test_a_good_rule_creates_the_segment(clients: Clients) -> None:
    body = await graphql(clients, CREATE, {"name": "Pro", "rule": GOOD, "id": "pro"})
    assert "errors" not in body, body
    created = body["data"]["createSegment"]
    assert (created["id"], created["name"], created["version"]) == ("pro", "Pro", 1)
    assert created["rule"] == GOOD


# (rule, JSON path of the bad part)
BAD_RULES: list[tuple[Any, str]] = [
    (
        {
            "all": [
                {"field": "traits.plan", "op": "eq", "value": "pro"},
                {"field": "nope.x", "op": "eq", "value": 1},
            ]
        },
        "$.all[1].field",
    ),
    ({"field": "orders.count", "op": "gt", "value": "a lot"}, "$.value"),
    ({"any": []}, "$.any"),
    ({"not": {"field": "orders.count", "op": "nope", "value": 1}}, "$.not.op"),
    ([1, 2], "$"),
    ("just text", "$"),
    ({"field": "traits.\u0000", "op": "eq", "value": 1}, "$"),
]


@pytest.mark.parametrize(("rule", "path"), BAD_RULES)
async def test_a_bad_rule_names_the_json_path_of_its_bad_part(
    clients: Clients, rule: Any, path: str
) -> None:
    body = await graphql(clients, CREATE, {"name": "Bad", "rule": rule})
    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["path"].startswith(path), error
    assert len(error["message"]) <= 300


async def test_nan_in_a_rule_is_bad_user_input(clients: Clients) -> None:
    rule = {"field": "orders.count", "op": "gt", "value": float("nan")}
    error = only_error(await graphql(clients, CREATE, {"name": "NaN", "rule": rule}))
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "path": "$"}


async def test_a_huge_rule_is_bad_user_input_not_a_crash(clients: Clients) -> None:
    rule = {"any": [{"field": f"traits.t{n}", "op": "eq", "value": "x" * 50} for n in range(900)]}
    error = only_error(await graphql(clients, CREATE, {"name": "Huge", "rule": rule}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_update_delete_and_unknown_ids(clients: Clients) -> None:
    await graphql(clients, CREATE, {"name": "Pro", "rule": GOOD, "id": "pro"})
    rule = {"field": "orders.count", "op": "gte", "value": 2}
    body = await graphql(clients, UPDATE, {"id": "pro", "rule": rule})
    assert "errors" not in body, body
    assert body["data"]["updateSegment"]["version"] == 2
    bad = {"all": [rule, {"field": "orders.count", "op": "gte", "value": "x"}]}
    error = only_error(await graphql(clients, UPDATE, {"id": "pro", "rule": bad}))
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "path": "$.all[1].value"}
    body = await graphql(clients, DELETE, {"id": "pro"})
    assert body["data"]["deleteSegment"] == {"id": "pro", "membersExited": 3}
    for query, variables in ((DELETE, {"id": "pro"}), (UPDATE, {"id": "gone", "rule": rule})):
        error = only_error(await graphql(clients, query, variables))
        assert error["extensions"]["code"] == "NOT_FOUND", error


async def test_recompute_scores_answers_the_run(clients: Clients) -> None:
    body = await graphql(clients, RECOMPUTE)
    assert "errors" not in body, body
    assert body["data"]["recomputeScores"] == {
        "modelVersion": "m-1",
        "customersScored": 12,
        "parameters": {"r": 0.5},
    }


def test_rule_error_paths_become_json_paths() -> None:
    assert json_path("rule") == "$"
    assert json_path("rule.all[1].field") == "$.all[1].field"
    assert json_path("rule[0]") == "$[0]"
    assert json_path("ruler") == "$"
    assert json.loads(json.dumps(json_path("rule.not.op"))) == "$.not.op"
