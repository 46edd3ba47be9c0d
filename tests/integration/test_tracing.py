"""Trace context across real hops, recorded by an in-memory exporter: one gRPC call (client
span -> server span over a real channel), Kafka (producer span -> consumer span through the
real broker, and on through a handler that publishes again), and the gateway (HTTP request ->
GraphQL operation -> its gRPC fan-out; ingest -> the record on the raw topic), where a
malformed or oversized ``traceparent`` from outside is ignored and the request still served."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.settings import GatewaySettings
from infra.local.servers import KafkaWireServer, MongoWireServer
from lodestar.v1 import events_pb2, identity_pb2_grpc, profile_pb2_grpc
from services.identity.api import IdentityServicer
from services.identity.server import SERVICE_NAME as IDENTITY
from services.platform import topics, tracing
from services.platform.bus import Bus, BusConfig, Delivery, Pending, ensure_topics
from services.platform.errors import InvalidArgument
from services.platform.logs import JsonFormatter
from services.platform.mongo import database, mongo_client
from services.platform.rpc import GrpcServer, client_channel
from services.profile.api import ProfileServicer
from services.profile.server import SERVICE_NAME as PROFILE
from services.profile.store import ProfileStore
from tests.support.identity import fresh_store, resolver
from tests.support.kafka import eventually, read_all, unique
from tests.support.keys import app_with_key

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
HOSTILE = [
    "00-zzzz-not-a-trace",
    f"00-{TRACE_ID}-{PARENT_ID}-01-" + "x" * 100,
    "0" * 7_000,
    f"00-{'0' * 32}-{PARENT_ID}-01",
]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test (as ``LODESTAR_TRACING_EXPORTER`` would turn it on)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert parent.context is not None
    return (
        child.parent is not None
        and child.parent.span_id == parent.context.span_id
        and child.parent.trace_id == parent.context.trace_id
    )


def one(found: Sequence[ReadableSpan], kind: SpanKind, name: str) -> ReadableSpan:
    matching = [s for s in found if s.kind is kind and s.name == name]
    assert len(matching) == 1, [(s.kind, s.name) for s in found]
    return matching[0]


# --- one gRPC hop ---------------------------------------------------------------------------

ECHO = "/lodestar.test.Echo/Say"
REFUSE = "/lodestar.test.Echo/Refuse"


def raw_call(channel: grpc.aio.Channel, method: str) -> Any:
    """A unary call of ``method`` sending and receiving bytes as they are."""
    return channel.unary_unary(method)


class LogLines(logging.Handler):
    """JSON log lines as the services write them, kept in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.out = io.StringIO()
        self.setFormatter(JsonFormatter("test"))

    def emit(self, record: logging.LogRecord) -> None:
        self.out.write(self.format(record) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """A gRPC server (the platform's, with its interceptors) with two raw-bytes methods."""
    log = logging.getLogger("lodestar.test.echo")

    async def say(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        log.warning("inside the call")
        return request

    async def refuse(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        raise InvalidArgument("no")

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "lodestar.test.Echo",
                    {
                        "Say": grpc.unary_unary_rpc_method_handler(say),
                        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
                    },
                )
            ]
        )

    server = GrpcServer("127.0.0.1", 0, ["lodestar.test.Echo"], register, default_deadline_s=10)
    await server.start()
    yield f"127.0.0.1:{server.port}"
    await server.stop(0)


async def test_a_grpc_call_is_a_client_span_and_its_server_child(
    spans: InMemorySpanExporter, echo: str
) -> None:
    lines = LogLines()
    logging.getLogger("lodestar.test.echo").addHandler(lines)
    try:
        async with client_channel(echo, timeout_s=10) as channel:
            with tracing.tracer("test").start_as_current_span("caller") as caller:
                assert await raw_call(channel, ECHO)(b"hi") == b"hi"
    finally:
        logging.getLogger("lodestar.test.echo").removeHandler(lines)
    found = spans.get_finished_spans()
    client = one(found, SpanKind.CLIENT, "lodestar.test.Echo/Say")
    server = one(found, SpanKind.SERVER, "lodestar.test.Echo/Say")
    assert child_of(client, one(found, SpanKind.INTERNAL, "caller"))
    assert child_of(server, client)
    assert hex_trace(server) == format(caller.get_span_context().trace_id, "032x")
    for span in (client, server):
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == 0
        assert span.attributes["rpc.service"] == "lodestar.test.Echo"
        assert span.attributes["rpc.method"] == "Say"
    # The servicer's log line carries the server span's ids.
    (entry,) = [e for e in lines.entries() if e["msg"] == "inside the call"]
    assert server.context is not None
    assert entry["trace_id"] == hex_trace(server)
    assert entry["span_id"] == format(server.context.span_id, "016x")


async def test_a_failed_call_records_its_status_on_both_sides(
    spans: InMemorySpanExporter, echo: str
) -> None:
    async with client_channel(echo, timeout_s=10) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw_call(channel, REFUSE)(b"x")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    found = spans.get_finished_spans()
    client = one(found, SpanKind.CLIENT, "lodestar.test.Echo/Refuse")
    server = one(found, SpanKind.SERVER, "lodestar.test.Echo/Refuse")
    assert child_of(server, client)
    code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert client.attributes is not None
    assert server.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == code
    assert server.attributes["rpc.grpc.status_code"] == code
    # The caller's call failed; the server answered a bad request correctly.
    assert client.status.status_code is StatusCode.ERROR
    assert server.status.status_code is StatusCode.UNSET


async def test_health_checks_are_not_traced(spans: InMemorySpanExporter, echo: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with client_channel(echo, timeout_s=10) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert [s.kind for s in spans.get_finished_spans()] == [SpanKind.CLIENT]


# --- one Kafka hop, and a second through a handler that publishes -----------------------------


def bus_config(kafka: KafkaWireServer) -> BusConfig:
    return BusConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id="test-tracing",
        session_timeout_ms=2000,
        handler_retries=1,
        retry_backoff_ms=10,
    )


class Relay:
    """Like identity: publishes a copy of every event of the batch to another topic."""

    def __init__(self, bus: Bus, topic: str) -> None:
        self.bus = bus
        self.topic = topic

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> Pending:
        return await self.bus.publish_many_later([(self.topic, None, d.message) for d in batch])


class Seen:
    def __init__(self) -> None:
        self.ids: list[str] = []

    async def __call__(self, batch: Sequence[Delivery[events_pb2.Event]]) -> None:
        self.ids.extend(d.message.event_id for d in batch)


async def test_kafka_carries_the_context_from_producer_to_consumer_and_on(
    spans: InMemorySpanExporter, kafka_server: KafkaWireServer
) -> None:
    first, second = unique("test.trace.a"), unique("test.trace.b")
    await ensure_topics(kafka_server.bootstrap_servers, {first: 2, second: 2})
    bus = Bus(bus_config(kafka_server))
    await bus.start()
    ids = [f"e{i}" for i in range(3)]
    roots: dict[str, trace.Span] = {}
    try:
        # Each event in a trace of its own, all queued together (one batch downstream).
        for event_id in ids:
            with tracing.tracer("test").start_as_current_span(f"root {event_id}") as started:
                roots[event_id] = started
                await bus.publish_many_later(
                    [(first, "k", events_pb2.Event(event_id=event_id, name="Tested"))]
                )
        seen = Seen()
        relay = bus.subscribe([first], unique("relay"), events_pb2.Event, Relay(bus, second))
        sink = bus.subscribe([second], unique("sink"), events_pb2.Event, seen)
        running = [asyncio.create_task(relay.run()), asyncio.create_task(sink.run())]

        async def all_seen() -> bool:
            for task in running:
                if task.done():
                    task.result()
            return set(seen.ids) >= set(ids)

        try:
            await eventually(all_seen, 60, "every event relayed and consumed")
        finally:
            await relay.stop()
            await sink.stop()
            await asyncio.wait_for(asyncio.gather(*running), 30)
    finally:
        await bus.stop()
    found = spans.get_finished_spans()
    for event_id in ids:
        trace_id = roots[event_id].get_span_context().trace_id
        mine = [s for s in found if s.context is not None and s.context.trace_id == trace_id]
        root = one(mine, SpanKind.INTERNAL, f"root {event_id}")
        sent = one(mine, SpanKind.PRODUCER, f"send {first}")
        relayed = one(mine, SpanKind.CONSUMER, f"process {first}")
        resent = one(mine, SpanKind.PRODUCER, f"send {second}")
        consumed = one(mine, SpanKind.CONSUMER, f"process {second}")
        assert child_of(sent, root)
        assert child_of(relayed, sent)
        assert child_of(resent, relayed)
        assert child_of(consumed, resent)
        assert consumed.attributes is not None
        assert consumed.attributes["messaging.destination.name"] == second
        assert "messaging.kafka.offset" in consumed.attributes
    # The records themselves carry the producer span in their headers.
    records = await read_all(kafka_server.bootstrap_servers, first)
    sent_ids = {
        format(s.context.span_id, "016x")
        for s in found
        if s.name == f"send {first}" and s.context is not None
    }
    carried = {dict(r.headers)["traceparent"].decode().split("-")[2] for r in records}
    assert carried == sent_ids


# --- the gateway: HTTP, GraphQL and its fan-out, ingest into Kafka -----------------------------


class Gateway:
    def __init__(self, http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
        self.http = http
        self.bearer = bearer


WRITE_KEY = "wk_trace_12345"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


@pytest.fixture
async def gateway(
    spans: InMemorySpanExporter, mongo_server: MongoWireServer, kafka_server: KafkaWireServer
) -> AsyncIterator[Gateway]:
    """The gateway app with its lifespan (real bus), over identity and profile servicers on
    a real gRPC server and database; built after tracing was turned on, as at start-up."""
    await ensure_topics(kafka_server.bootstrap_servers, {topics.EVENTS_RAW: 2})
    client = mongo_client(mongo_server.uri, "tests")
    identity = await fresh_store(client)
    profile = ProfileStore(database(client, unique("trace").replace("-", "_"), "profile"), 100)

    def register(server: grpc.aio.Server) -> None:
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(
            IdentityServicer(identity, resolver(identity)), server
        )
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(profile), server)

    server = GrpcServer("127.0.0.1", 0, [IDENTITY, PROFILE], register, default_deadline_s=10)
    await server.start()
    target = f"127.0.0.1:{server.port}"
    settings = GatewaySettings(
        write_key=WRITE_KEY,
        kafka_bootstrap_servers=kafka_server.bootstrap_servers,
        identity_addr=target,
        profile_addr=target,
        grpc_timeout_s=10,
        metrics_port=0,
    )
    app, bearer = app_with_key(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", timeout=30
            ) as http:
                yield Gateway(http, bearer)
    finally:
        await server.stop(0)
        client.close()


QUERY = "query Lookup($id: ID!) { customer(by: {id: $id}) { id } }"


async def test_a_graphql_query_is_one_trace_down_to_the_services(
    gateway: Gateway, spans: InMemorySpanExporter
) -> None:
    secret_id = unique("cust-secret")
    response = await gateway.http.post(
        "/graphql",
        json={"query": QUERY, "variables": {"id": secret_id}, "operationName": "Lookup"},
        headers={**gateway.bearer, "traceparent": TRACEPARENT},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"customer": None}}
    found = [s for s in spans.get_finished_spans() if hex_trace(s) == TRACE_ID]
    http = one(found, SpanKind.SERVER, "POST /graphql")
    assert http.parent is not None
    assert format(http.parent.span_id, "016x") == PARENT_ID
    assert http.attributes is not None
    assert http.attributes["http.response.status_code"] == 200
    operation = one(found, SpanKind.INTERNAL, "graphql query")
    assert child_of(operation, http)
    assert operation.attributes is not None
    assert operation.attributes["graphql.operation.type"] == "query"
    assert operation.attributes["graphql.operation.name"] == "Lookup"
    calls = [s for s in found if s.kind is SpanKind.CLIENT]
    assert {s.attributes["rpc.service"] for s in calls if s.attributes} == {IDENTITY, PROFILE}
    for call in calls:
        assert child_of(call, operation)
        served = [s for s in found if s.kind is SpanKind.SERVER and child_of(s, call)]
        assert len(served) == 1
    # Neither the query source, its variables nor the customer id reach any span.
    for span in spans.get_finished_spans():
        text = json.dumps({"name": span.name, "attributes": dict(span.attributes or {})})
        assert secret_id not in text
        assert "customer(by" not in text


async def test_an_ingest_call_carries_its_trace_into_the_raw_topic(
    gateway: Gateway, spans: InMemorySpanExporter, kafka_server: KafkaWireServer
) -> None:
    user = unique("user")
    response = await gateway.http.post(
        "/v1/track",
        json={"userId": user, "event": "Traced", "properties": {"email": "a@example.com"}},
        headers={**BASIC, "traceparent": TRACEPARENT},
    )
    assert response.status_code == 200, response.text
    found = [s for s in spans.get_finished_spans() if hex_trace(s) == TRACE_ID]
    http = one(found, SpanKind.SERVER, "POST /v1/track")
    sent = one(found, SpanKind.PRODUCER, f"send {topics.EVENTS_RAW}")
    assert child_of(sent, http)
    for span in spans.get_finished_spans():
        assert user not in json.dumps(dict(span.attributes or {}))
    records = await read_all(kafka_server.bootstrap_servers, topics.EVENTS_RAW)
    (record,) = [r for r in records if user.encode() in (r.value or b"")]
    carried = dict(record.headers)["traceparent"].decode()
    assert carried.split("-")[1] == TRACE_ID
    assert sent.context is not None
    assert carried.split("-")[2] == format(sent.context.span_id, "016x")


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_hostile_traceparent_is_ignored_and_the_request_served(
    gateway: Gateway, spans: InMemorySpanExporter, hostile: str
) -> None:
    track = await gateway.http.post(
        "/v1/track",
        json={"userId": unique("user"), "event": "Traced"},
        headers={**BASIC, "traceparent": hostile, "tracestate": "k=" + "v" * 5_000},
    )
    assert track.status_code == 200, track.text
    query = await gateway.http.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={**gateway.bearer, "traceparent": hostile},
    )
    assert query.status_code == 200, query.text
    assert query.json() == {"data": {"__typename": "Query"}}
    servers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert {s.name for s in servers} == {"POST /v1/track", "POST /graphql"}
    # Each request started a trace of its own.
    assert all(s.parent is None for s in servers)
