"""The outside probe's cases, tried again against the running platform as a new user would:
each gets a 4xx (or a gRPC INVALID_ARGUMENT) naming the problem, or the right data."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest

from infra.local.stack import Stack
from lodestar.v1 import (
    profile_pb2,
    profile_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from tests.security.hostile import nested_text
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

CUSTOMER_BY_EMAIL = '{ customer(by: {identifier: {type: "email", value: "%s"}}) { id traits } }'


def ingest_error(response: httpx.Response) -> dict[str, Any]:
    """The named error of a refused ingest call."""
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"]
    assert error["message"]
    return error


# --- 1. GraphQL read without the API key ---------------------------------------------------


async def test_graphql_never_runs_a_query_without_the_key(platform: Platform, stack: Stack) -> None:
    user_id = unique("probe")
    email = f"{user_id}@probe.example"
    await platform.known_customer(user_id, email=email)
    query = CUSTOMER_BY_EMAIL % email
    url = f"{stack.gateway_url}/graphql"
    client = platform.client
    answers = [
        await client.get(url, params={"query": query}, headers={"Accept": "text/html"}),
        await client.get(url, params={"query": query}),
        await client.get(url, params={"query": query}, headers={"Accept": "*/*, text/html"}),
        await client.post(url, json={"query": query}, headers={"Accept": "text/html"}),
        await client.post(url, json={"query": query}),
        await client.post(url, json={"query": query}, headers={"Authorization": "Bearer nope"}),
    ]
    for answer in answers:
        assert answer.status_code == 401, (answer.request.method, answer.text[:200])
        assert email not in answer.text
    # With the key the same query answers.
    allowed = await platform.graphql(query)
    assert allowed.json()["data"]["customer"]["traits"]["email"] == email


# --- 4. 500s from small bodies, 5. NUL bytes, 6. client clocks -----------------------------


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("lone surrogate in a trait", '{"userId": "u-%s", "traits": {"name": "\\ud800"}}'),
        ("lone surrogate in a key", '{"userId": "u-%s", "traits": {"\\udfff": 1}}'),
        ("lone surrogate in the user id", '{"userId": "u-%s\\ud800"}'),
        ("array nested 400 deep", '{"userId": "u-%s", "traits": {"a": ' + nested_text(400) + "}}"),
        ("object nested 400 deep", '{"userId": "u-%s", "context": ' + nested_text(400, "{") + "}"),
        ("body nested 400 deep", nested_text(400).replace("1", '"u-%s"')),
        ("year 1 at +14:00", '{"userId": "u-%s", "timestamp": "0001-01-01T00:00:00+14:00"}'),
        ("year 9999 at -14:00", '{"userId": "u-%s", "timestamp": "9999-12-31T23:59:59-14:00"}'),
        ("year 1 sentAt", '{"userId": "u-%s", "sentAt": "0001-01-01T00:00:00+14:00"}'),
        ("year 9999", '{"userId": "u-%s", "timestamp": "9999-01-01T00:00:00Z"}'),
        ("NUL in a trait key", '{"userId": "u-%s", "traits": {"na\\u0000me": "x"}}'),
    ],
)
async def test_small_hostile_identify_bodies_get_a_named_400(
    platform: Platform, stack: Stack, name: str, body: str
) -> None:
    tag = unique("small")
    response = await platform.client.post(
        f"{stack.gateway_url}/v1/identify",
        content=(body % tag if "%s" in body else body).encode(),
        headers={"Content-Type": "application/json"},
        auth=(stack.write_key, ""),
    )
    ingest_error(response)
    # The same keep-alive connection goes on working.
    after = await platform.send("/v1/identify", {"userId": f"u-{tag}-after"})
    assert after.status_code == 200, name
    # Nothing of the refused call was produced.
    assert await platform.customer("user_id", f"u-{tag}") is None


async def test_nul_in_an_event_name_or_property_key_is_refused(platform: Platform) -> None:
    user_id = unique("nul")
    for body in (
        {"userId": user_id, "event": "Bad\u0000Name"},
        {"userId": user_id, "event": "Fine", "properties": {"a\u0000b": 1}},
    ):
        ingest_error(await platform.send("/v1/track", body))


async def test_a_far_future_time_never_freezes_a_trait(platform: Platform) -> None:
    user_id = unique("clock")
    future = (datetime.now(UTC) + timedelta(days=3650)).isoformat()
    refused = await platform.send(
        "/v1/identify", {"userId": user_id, "traits": {"plan": "frozen"}, "timestamp": future}
    )
    ingest_error(refused)
    # A device whose clock runs ten years ahead, but whose sentAt runs with it: the
    # Segment skew correction brings the event back to now, so later updates still win.
    now = datetime.now(UTC)
    skewed = await platform.send(
        "/v1/identify",
        {
            "userId": user_id,
            "traits": {"plan": "skewed"},
            "timestamp": (now + timedelta(days=3650)).isoformat(),
            "sentAt": (now + timedelta(days=3650, seconds=1)).isoformat(),
        },
    )
    assert skewed.status_code == 200, skewed.text
    await platform.known_customer(user_id)
    later = await platform.send(
        "/v1/identify",
        {"userId": user_id, "traits": {"plan": "current"}, "messageId": unique("m")},
    )
    assert later.status_code == 200
    await platform.send("/v1/track", {"userId": user_id, "event": "Marker"})
    customer = await platform.wait_for_count(user_id, "Marker", 1)
    assert customer["traits"]["plan"] == "current"
    last_seen = datetime.fromisoformat(customer["lastSeen"])
    assert last_seen < datetime.now(UTC) + timedelta(days=1)


# --- 7. PassKit web service ----------------------------------------------------------------


async def test_passkit_odd_input_gets_4xx(platform: Platform, stack: Stack) -> None:
    client = platform.client
    base = f"{stack.passkit_url}/v1"
    deep = nested_text(400, "{").encode()
    answers = [
        await client.post(f"{base}/log", content=deep),
        await client.post(f"{base}/log", content=b'{"logs": ' + nested_text(400).encode() + b"}"),
        await client.post(
            f"{base}/devices/d1/registrations/pass.x/s1",
            content=deep,
            headers={"Authorization": "ApplePass token"},
        ),
    ]
    for since in ("²", str(2**64), "9" * 5000):
        answers.append(
            await client.get(
                f"{base}/devices/d1/registrations/pass.x", params={"passesUpdatedSince": since}
            )
        )
    for answer in answers:
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.status_code)
    assert await declared_length_status(stack.passkit_url, "/v1/log", 30 * 1024 * 1024) == 413


async def declared_length_status(base_url: str, path: str, length: int) -> int:
    """The status a server answers to a body declaring ``length`` bytes, of which only a few
    are sent: a server that checks the declared size answers at once."""
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n{{}}".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(status_line.split()[1])


# --- 8. GraphQL without limits -------------------------------------------------------------


async def test_graphql_refuses_huge_and_wide_queries(platform: Platform) -> None:
    huge = "{ " + " ".join(f"f{i}: segments {{ id }}" for i in range(14_000)) + " }"
    assert len(huge) > 300_000
    response = await platform.graphql(huge)
    assert response.status_code in (400, 413), response.status_code
    aliases = "{ " + " ".join(f"a{i}: segments {{ id }}" for i in range(1_000)) + " }"
    response = await platform.graphql(aliases)
    assert response.status_code in (200, 400), response.status_code
    errors = response.json()["errors"]
    # Stopped by the token limit in the parser, or by the alias limit in validation.
    assert errors[0]["extensions"]["code"] in ("GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED")
    assert response.json().get("data") is None


# --- 9. gRPC ------------------------------------------------------------------------------


async def test_grpc_bounds_rule_depth_and_echoes(stack: Stack) -> None:
    leaf = json.dumps({"field": "traits.plan", "op": "eq", "value": "gold"})
    # Written directly: no JSON encoder recurses 3,000 deep.
    rule = '{"not": ' * 3_000 + leaf + "}" * 3_000
    async with stack.grpc_channel("segmentation") as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateSegment(
                segmentation_pb2.CreateSegmentRequest(
                    id=unique("deep"), name="Deep", rule_json=rule
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    long_id = "c" * 100_000
    async with stack.grpc_channel("profile") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await profile_pb2_grpc.ProfileServiceStub(channel).GetProfile(
                profile_pb2.GetProfileRequest(customer_id=long_id)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(caught.value.details() or "") < 1_000


# --- 12. Pass secrets on the read API -----------------------------------------------------


async def test_the_pass_token_is_handed_out_once(platform: Platform, stack: Stack) -> None:
    customer_id = await platform.known_customer(unique("passes"))
    async with stack.grpc_channel("wallet") as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        issued = await stub.IssuePass(
            wallet_pb2.IssuePassRequest(
                customer_id=customer_id, kind=wallet_pb2.PASS_KIND_STORE_CARD
            )
        )
        assert issued.authentication_token
        listed = await stub.ListPasses(wallet_pb2.ListPassesRequest(customer_ids=[customer_id]))
    text = str(listed)
    assert issued.serial_number in text
    assert issued.authentication_token not in text


async def test_grpc_refuses_calls_without_the_service_token(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target("profile")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await profile_pb2_grpc.ProfileServiceStub(channel).GetProfile(
                profile_pb2.GetProfileRequest(customer_id="anyone"), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- A request head past the HTTP servers' limit ---------------------------------------------


async def test_an_oversized_request_head_is_431_naming_the_limit(stack: Stack) -> None:
    # 100 KB of token: read and dropped after the answer, so the client always gets it.
    headers = {"Authorization": "Bearer " + "x" * 100_000}
    async with httpx.AsyncClient(timeout=30) as client:
        for url in (f"{stack.gateway_url}/graphql", f"{stack.passkit_url}/v1/log"):
            for _ in range(5):
                answer = await client.post(url, headers=headers, content=b"{}")
                assert answer.status_code == 431, (url, answer.status_code, answer.text[:200])
                assert "at most 16384 bytes" in answer.text, answer.text[:200]
        assert (await client.get(f"{stack.passkit_url}/healthz")).status_code == 200
