"""One trace across processes: a platform started with ``LODESTAR_TRACING_EXPORTER=console``
prints each process's spans as JSON lines into its log; an ingest call's trace id reaches the
consumer spans of identity, profile, segmentation and wallet, each a child of the producer
span before it, and no span carries the customer's data."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.local.servers import MongoWireServer
from infra.local.stack import Stack, StackPorts
from services.platform import topics
from tests.support.kafka import eventually, unique

pytestmark = pytest.mark.e2e

TRACE_ID = "5e1f00d5c0ffee5e1f00d5c0ffee0001"
CALLER_SPAN = "1234567890abcdef"


@pytest.fixture(scope="module")
def traced_stack(mongo_server: MongoWireServer) -> Iterator[Stack]:
    """A second platform with the console exporter, spans flushed every 200 ms (its own Kafka:
    the session's one carries the other platform's consumer groups)."""
    with tempfile.TemporaryDirectory(prefix="lodestar-traced-") as logs:
        stack = Stack(
            StackPorts.free(),
            Path(logs),
            mongo_uri=mongo_server.uri,
            extra_env={
                "LODESTAR_TRACING_EXPORTER": "console",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "LODESTAR_MONGO_DATABASE_PREFIX": unique("traced").replace("-", "_"),
            },
        )
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


def spans_in(log: Path) -> list[dict[str, Any]]:
    """The span lines of a process's log (its log lines have no ``context``)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("context"), dict):
            found.append(entry)
    return found


def in_trace(log: Path) -> list[dict[str, Any]]:
    return [s for s in spans_in(log) if s["context"]["trace_id"] == f"0x{TRACE_ID}"]


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def span_ids(spans: list[dict[str, Any]]) -> set[str]:
    return {s["context"]["span_id"] for s in spans}


async def test_an_ingest_call_is_one_trace_through_the_services(traced_stack: Stack) -> None:
    user, email = unique("traced-user"), f"{unique('secret')}@example.com"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{traced_stack.gateway_url}/v1/identify",
            json={"userId": user, "traits": {"email": email, "plan": "gold"}},
            auth=(traced_stack.write_key, ""),
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
        )
    assert response.status_code == 200, response.text
    logs = traced_stack.log_dir
    wanted = {
        "identity": f"process {topics.EVENTS_RAW}",
        "profile": f"process {topics.EVENTS_RESOLVED}",
        "segmentation": f"process {topics.EVENTS_RESOLVED}",
        "wallet": f"process {topics.EVENTS_RESOLVED}",
    }

    async def every_service_has_its_span() -> bool:
        return all(named(in_trace(logs / f"{name}.log"), span) for name, span in wanted.items())

    await eventually(every_service_has_its_span, 60, "consumer spans of the ingest call's trace")

    gateway = in_trace(logs / "gateway.log")
    (http,) = named(gateway, "POST /v1/identify")
    assert http["kind"] == "SpanKind.SERVER"
    assert http["parent_id"] == f"0x{CALLER_SPAN}"
    assert http["resource"]["attributes"]["service.name"] == "gateway"
    raw_sends = named(gateway, f"send {topics.EVENTS_RAW}")
    assert [s["parent_id"] for s in raw_sends] == [http["context"]["span_id"]]

    identity = in_trace(logs / "identity.log")
    (consumed,) = named(identity, wanted["identity"])
    assert consumed["kind"] == "SpanKind.CONSUMER"
    assert consumed["parent_id"] in span_ids(raw_sends)
    resolved_sends = [
        s
        for s in named(identity, f"send {topics.EVENTS_RESOLVED}")
        if s["parent_id"] == consumed["context"]["span_id"]
    ]
    assert len(resolved_sends) == 1
    for name in ("profile", "segmentation", "wallet"):
        spans = in_trace(logs / f"{name}.log")
        (span,) = named(spans, wanted[name])
        assert span["parent_id"] in span_ids(resolved_sends), name
        assert span["resource"]["attributes"]["service.name"] == name

    # Nothing of the customer in any span of any process.
    for log in logs.glob("*.log"):
        for span in spans_in(log):
            text = json.dumps(span)
            assert user not in text, log.name
            assert email not in text, log.name
