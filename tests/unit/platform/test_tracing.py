"""Tracing set-up: off by default, the exporter chosen by settings, trace ids in the JSON
logs, and a hostile ``traceparent`` ignored without a word."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lodestar.v1 import events_pb2
from services.platform import runtime, tracing
from services.platform.logs import JsonFormatter
from services.platform.rpc import GrpcServer
from services.platform.settings import CommonSettings, load_settings

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@dataclass(frozen=True)
class Record:
    """A consumed record as the bus hands it to the tracing of a batch."""

    topic: str
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes], ...]
    message: events_pb2.Event


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every finished span kept in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


def test_tracing_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LODESTAR_TRACING_EXPORTER", raising=False)
    settings = CommonSettings()
    assert settings.tracing_exporter == "none"
    assert tracing.configure("profile", settings.tracing_exporter) is None
    assert not tracing.enabled()
    assert tracing.provider() is None
    # Nothing was installed globally either, and every helper is inert.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert isinstance(tracing.tracer("bus"), trace.NoOpTracer)
    assert tracing.start_produce("t", events_pb2.Event(event_id="e")) == (None, None)
    assert tracing.log_ids() == {}


@pytest.mark.parametrize(
    ("value", "kind"),
    [("none", type(None)), ("console", ConsoleSpanExporter), ("otlp", OTLPSpanExporter)],
)
def test_the_exporter_follows_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, kind: type
) -> None:
    monkeypatch.setenv("LODESTAR_TRACING_EXPORTER", value)
    assert isinstance(tracing.exporter_for(CommonSettings().tracing_exporter), kind)


def test_otlp_takes_the_standard_endpoint_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector.test:4318/v1/traces")
    exporter = tracing.exporter_for("otlp")
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://collector.test:4318/v1/traces"


def test_a_bad_exporter_is_a_settings_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LODESTAR_TRACING_EXPORTER", "jaeger")
    with pytest.raises(SystemExit) as stopped:
        load_settings(CommonSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "LODESTAR_TRACING_EXPORTER" in err
    assert "'console'" in err
    with pytest.raises(ValueError, match="unknown tracing exporter"):
        tracing.exporter_for("jaeger")


def test_console_prints_one_json_line_per_span_named_after_the_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    provider = tracing.configure("identity", "console")
    assert provider is not None
    try:
        with tracing.tracer("test").start_as_current_span("work"):
            pass
    finally:
        tracing.shutdown()
    assert not tracing.enabled()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    span = json.loads(lines[0])
    assert span["name"] == "work"
    assert span["resource"]["attributes"]["service.name"] == "identity"


def render_in_span(record: logging.LogRecord) -> dict[str, object]:
    parsed = json.loads(JsonFormatter("profile").format(record))
    assert isinstance(parsed, dict)
    return parsed


def test_log_lines_carry_the_active_span_ids(spans: InMemorySpanExporter) -> None:
    record = logging.LogRecord("lodestar.test", logging.INFO, __file__, 1, "hello", (), None)
    assert "trace_id" not in render_in_span(record)
    with tracing.tracer("test").start_as_current_span("work") as span:
        entry = render_in_span(record)
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert entry["msg"] == "hello"


def test_a_well_formed_traceparent_is_a_parent() -> None:
    for given in (TRACEPARENT, TRACEPARENT.encode()):
        found = tracing.parent_from(given)
        assert found is not None
        context = trace.get_current_span(found).get_span_context()
        assert format(context.trace_id, "032x") == TRACE_ID
        assert context.is_remote


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        "",
        "garbage",
        TRACEPARENT.upper(),
        TRACEPARENT + "-extra",
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{SPAN_ID}-01",
        "00-" + "a" * 10_000,
        "x" * 1_000_000,
        b"\xff" * 55,
        "é" * 55,
    ],
)
def test_a_malformed_traceparent_is_ignored_silently(
    hostile: str | bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert tracing.parent_from(hostile) is None
    assert caplog.records == []


def test_consumer_span_parent_is_the_records_producer(spans: InMemorySpanExporter) -> None:
    record = Record(
        "lodestar.events.raw.v1",
        2,
        41,
        (("other", b"x"), ("traceparent", TRACEPARENT.encode())),
        events_pb2.Event(event_id="e-1"),
    )
    with tracing.consuming("identity", [record]):
        headers, produced = tracing.start_produce("out", events_pb2.Event(event_id="e-1"))
    assert produced is not None
    assert headers is not None
    produced.end()
    kinds = {span.kind: span for span in spans.get_finished_spans()}
    consumer, producer = kinds[trace.SpanKind.CONSUMER], kinds[trace.SpanKind.PRODUCER]
    assert consumer.kind is trace.SpanKind.CONSUMER
    assert consumer.parent is not None
    assert format(consumer.parent.span_id, "016x") == SPAN_ID
    assert format(consumer.context.trace_id, "032x") == TRACE_ID
    assert producer.parent is not None
    assert producer.parent.span_id == consumer.context.span_id
    assert dict(headers)["traceparent"].decode().split("-")[2] == format(
        producer.context.span_id, "016x"
    )


def test_a_failing_handler_marks_the_consumer_spans(spans: InMemorySpanExporter) -> None:
    records = [Record("t", 0, n, (), events_pb2.Event(event_id=f"e-{n}")) for n in range(2)]
    with pytest.raises(ValueError), tracing.consuming("g", records):
        raise ValueError("customer alice@example.com broke it")
    finished = spans.get_finished_spans()
    assert len(finished) == 2
    for span in finished:
        assert span.status.status_code is trace.StatusCode.ERROR
        # The type only: an error's message may hold customer data.
        assert span.status.description == "ValueError"


def test_spans_carry_no_request_data(spans: InMemorySpanExporter) -> None:
    with tracing.http_server_span("BREW", "nonsense") as span:
        tracing.http_done(span, "BREW", None, 404)
    (finished,) = spans.get_finished_spans()
    assert finished.name == "_OTHER"
    assert finished.parent is None
    assert dict(finished.attributes or {}) == {
        "http.request.method": "_OTHER",
        "http.response.status_code": 404,
    }


async def test_the_service_shutdown_flushes_the_buffered_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "HARD_LIMIT_S", 7 * 86_400.0, raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    # Would export only a minute from now, long after the process is gone.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    tracing.install(provider)
    try:
        with tracing.tracer("test").start_as_current_span("last work"):
            pass
        assert exporter.get_finished_spans() == ()
        server = GrpcServer("127.0.0.1", 0, [], lambda _: None)
        await server.start()
        await runtime.shut_down(server, [], [], [], [])
        # Stopped too: nothing more is recorded.
        assert not tracing.enabled()
    finally:
        tracing.uninstall()
    assert [s.name for s in exporter.get_finished_spans()] == ["last work"]
