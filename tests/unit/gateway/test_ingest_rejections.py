"""``lodestar_ingest_rejected_total``: every event the ingest API refuses is counted under the
error code it answered (a bounded label), never under anything the call held."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from google.protobuf.message import Message
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from gateway.ingest import IngestApi
from gateway.settings import GatewaySettings
from services.platform.bus import Bus, BusConfig

WRITE_KEY = "wk_rejections_12345"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
JSON = {**AUTH, "Content-Type": "application/json"}


class RecordingBus(Bus):
    """A bus that keeps what it is asked to produce instead of talking to Kafka."""

    def __init__(self) -> None:
        super().__init__(BusConfig(bootstrap_servers="unused:9092", client_id="test"))
        self.produced: list[tuple[str, str | bytes | None, Message]] = []

    async def publish_many(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> None:
        self.produced.extend(records)


def client_of(api: IngestApi) -> httpx.AsyncClient:
    app = Starlette(routes=api.routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# One event a second, bursts of 1: the second call in a row is rate limited.
SLOW = GatewaySettings(
    write_key=WRITE_KEY,
    ingest_rate_limit_per_s=0.001,
    ingest_rate_limit_burst=1,
    ingest_max_batch_events=1,
)


def rejected(kind: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "lodestar_ingest_rejected_total", {"type": kind, "reason": reason}
        )
        or 0.0
    )


@pytest.fixture
async def ingest() -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(IngestApi(GatewaySettings(write_key=WRITE_KEY), RecordingBus())) as http:
        yield http


async def answered(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, response.text
    code = response.json()["error"]["code"]
    assert isinstance(code, str)
    return code


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("track", "invalid_event", JSON, json.dumps({"userId": "u-1"}).encode()),
    ("identify", "malformed_json", JSON, b"{not json"),
    (
        "page",
        "payload_too_large",
        JSON,
        json.dumps({"anonymousId": "a", "x": "y" * 40_000}).encode(),
    ),
    ("track", "unsupported_encoding", {**JSON, "Content-Encoding": "br"}, b"{}"),
    ("track", "malformed_body", {**JSON, "Content-Encoding": "gzip"}, b"not gzip at all"),
]


@pytest.mark.parametrize(("kind", "reason", "headers", "body"), CASES)
async def test_a_refused_call_is_counted_under_the_code_it_answered(
    ingest: httpx.AsyncClient, kind: str, reason: str, headers: dict[str, str], body: bytes
) -> None:
    before = rejected(kind, reason)
    code = await answered(await ingest.post(f"/v1/{kind}", content=body, headers=headers))
    assert code == reason
    assert rejected(kind, reason) == before + 1


async def test_a_batch_counts_each_bad_call(ingest: httpx.AsyncClient) -> None:
    before = rejected("batch", "invalid_event")
    batch = [{"type": "track", "userId": "u-1"}, {"type": "track", "event": "E"}]
    batch.append({"type": "track", "userId": "u-2", "event": "Fine"})
    body = gzip.compress(json.dumps({"batch": batch}).encode())
    response = await ingest.post(
        "/v1/batch", content=body, headers={**JSON, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert rejected("batch", "invalid_event") == before + 2


async def test_rate_limited_events_are_counted() -> None:
    async with client_of(IngestApi(SLOW, RecordingBus())) as ingest:
        call = json.dumps({"userId": "u-1", "event": "E"}).encode()
        assert (await ingest.post("/v1/track", content=call, headers=JSON)).status_code == 200
        before = rejected("track", "rate_limited")
        code = await answered(await ingest.post("/v1/track", content=call, headers=JSON))
    assert code == "rate_limited"
    assert rejected("track", "rate_limited") == before + 1


def test_the_reason_label_never_holds_a_value_of_the_call() -> None:
    reasons = {
        sample.labels["reason"]
        for family in REGISTRY.collect()
        if family.name == "lodestar_ingest_rejected"
        for sample in family.samples
    }
    assert reasons <= {
        "invalid_event",
        "malformed_json",
        "malformed_body",
        "payload_too_large",
        "unsupported_encoding",
        "rate_limited",
    }
