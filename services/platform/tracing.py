"""OpenTelemetry tracing: set up from settings, spans for the doors, gRPC and Kafka.

Off by default (``LODESTAR_TRACING_EXPORTER=none``): no provider is installed, every helper
here returns at once and the gRPC interceptors and HTTP middleware are not even added, so the
hot paths pay one boolean test. ``console`` prints each finished span as one JSON line on
stdout; ``otlp`` sends them over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_ENDPOINT``; default ``http://localhost:4318``), batched.

Context travels as the W3C ``traceparent`` only (gRPC metadata, Kafka record headers, HTTP
headers); ``tracestate`` is neither read nor sent, and a ``traceparent`` that is not exactly
the W3C shape is ignored, so hostile headers cost nothing and log nothing. Span attributes
never carry identifiers, traits, keys, query sources or variables: only topics, groups,
partitions, offsets, method and route names and status codes.

The provider is this module's own (not the global one), so tests can install an in-memory
exporter and remove it again.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Literal, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Exporter = Literal["none", "console", "otlp"]
EXPORTERS: tuple[Exporter, ...] = ("none", "console", "otlp")

TRACEPARENT = "traceparent"
# Exactly what a version-00 traceparent looks like; anything else is ignored unread.
_TRACEPARENT_SHAPE = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACEPARENT_LEN = 55
# Shutdown flushes for at most this long (the exporter may be unreachable).
FLUSH_TIMEOUT_MS = 2_000

_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP = trace.NoOpTracer()
# Reusable: entering it does nothing.
_OFF: AbstractContextManager[None] = nullcontext()


class _Installed:
    """The provider spans go to (``None``: tracing off) and its tracers by component."""

    provider: TracerProvider | None = None
    tracers: dict[str, Tracer] = {}  # noqa: RUF012 (one per process, reset on install)


_installed = _Installed()
# While a consumed batch is handled: the context of each record's consumer span by its
# event_id, so what a handler publishes for one record continues that record's trace.
_ORIGINS: ContextVar[Mapping[str, otel_context.Context] | None] = ContextVar(
    "lodestar_trace_origins", default=None
)


def enabled() -> bool:
    """Whether spans are recorded in this process."""
    return _installed.provider is not None


def provider() -> TracerProvider | None:
    """The installed provider, ``None`` when tracing is off."""
    return _installed.provider


def exporter_for(name: str) -> SpanExporter | None:
    """The exporter a ``LODESTAR_TRACING_EXPORTER`` value stands for (``None`` for none)."""
    if name == "none":
        return None
    if name == "console":
        # One line per span, so span lines sit among the service's JSON log lines.
        return ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + os.linesep
        )
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Endpoint, headers and timeout from the standard OTEL_EXPORTER_OTLP_* variables.
        return OTLPSpanExporter()
    raise ValueError(f"unknown tracing exporter {name[:40]!r}; expected one of {EXPORTERS}")


def configure(service: str, exporter: str) -> TracerProvider | None:
    """Install a batching provider named after ``service`` exporting to ``exporter``; with
    ``none`` nothing is installed (tracing stays off)."""
    chosen = exporter_for(exporter)
    if chosen is None:
        return None
    built = TracerProvider(resource=Resource.create({"service.name": service}))
    built.add_span_processor(BatchSpanProcessor(chosen))
    install(built)
    return built


def install(chosen: TracerProvider) -> None:
    """Record spans with ``chosen`` from now on (tests install an in-memory exporter)."""
    _installed.provider = chosen
    _installed.tracers = {}


def uninstall() -> None:
    """Turn tracing off again, without flushing."""
    _installed.provider = None
    _installed.tracers = {}


def shutdown() -> None:
    """Flush what is buffered (bounded) and stop the exporter; tracing is off afterwards.
    Blocking: run it in a thread from async code."""
    installed = _installed.provider
    uninstall()
    if installed is not None:
        installed.force_flush(FLUSH_TIMEOUT_MS)
        installed.shutdown()


def tracer(component: str) -> Tracer:
    """The tracer of one component (``bus``, ``rpc``, ``gateway.http``); a no-op when off."""
    installed = _installed.provider
    if installed is None:
        return _NOOP
    found = _installed.tracers.get(component)
    if found is None:
        found = _installed.tracers[component] = installed.get_tracer(f"lodestar.{component}")
    return found


def parent_from(traceparent: str | bytes | None) -> otel_context.Context | None:
    """The remote parent a ``traceparent`` value names; ``None`` when absent or malformed."""
    if isinstance(traceparent, bytes):
        if len(traceparent) != _TRACEPARENT_LEN:
            return None
        traceparent = traceparent.decode("ascii", "replace")
    if (
        not isinstance(traceparent, str)
        or len(traceparent) != _TRACEPARENT_LEN
        or _TRACEPARENT_SHAPE.fullmatch(traceparent) is None
    ):
        return None
    found = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    span_context = trace.get_current_span(found).get_span_context()
    return found if span_context.is_valid else None


def traceparent_of(ctx: otel_context.Context | None = None) -> str | None:
    """The ``traceparent`` of ``ctx`` (default: the current context), if a span is in it."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, ctx)
    return carrier.get(TRACEPARENT)


def log_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the active span, for a log line; empty when none."""
    if _installed.provider is None:
        return {}
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }


def fail(span: Span, error: BaseException) -> None:
    """Mark ``span`` failed by the type of ``error`` (its message may hold customer data)."""
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def mark_failed(span: Span) -> None:
    """Mark ``span`` failed, with no description."""
    span.set_status(Status(StatusCode.ERROR))


# --- gRPC -----------------------------------------------------------------------------------


def rpc_name(method: str | bytes) -> str:
    """``/pkg.Service/Method`` as the span name ``pkg.Service/Method``."""
    text = method.decode("ascii", "replace") if isinstance(method, bytes) else method
    return text.lstrip("/")[:200]


def rpc_server_span(
    method: str | bytes, traceparent: str | bytes | None
) -> AbstractContextManager[Span]:
    """The SERVER span of one gRPC call, child of the caller's ``traceparent``; current
    inside the ``with`` block."""
    return _rpc_span(SpanKind.SERVER, method, parent_from(traceparent))


def rpc_client_span(method: str | bytes) -> AbstractContextManager[Span]:
    """The CLIENT span of one gRPC call, child of the current span; current inside."""
    return _rpc_span(SpanKind.CLIENT, method, None)


@contextmanager
def _rpc_span(
    kind: SpanKind, method: str | bytes, parent: otel_context.Context | None
) -> Iterator[Span]:
    name = rpc_name(method)
    service, _, short = name.rpartition("/")
    with tracer("rpc").start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": short},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def rpc_status(span: Span, code: int, name: str, *, client: bool) -> None:
    """Record the call's status code; anything but OK marks a client span failed, and a
    server span only when the fault is the server's (as the gRPC conventions say)."""
    span.set_attribute("rpc.grpc.status_code", code)
    if code == 0:
        return
    server_faults = {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE"}
    if client or name in server_faults:
        span.set_status(Status(StatusCode.ERROR, name))


# --- Kafka ----------------------------------------------------------------------------------


class Consumed(Protocol):
    """What the consumer span of one record needs (a :class:`services.platform.bus.Delivery`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def message(self) -> Any: ...


Headers = list[tuple[str, bytes]]


def _origin_of(message: Any) -> otel_context.Context | None:
    """The consumer span context of the record ``message`` was published for, if any."""
    origins = _ORIGINS.get()
    if not origins:
        return None
    for field in ("event_id", "caused_by_event_id"):
        key = getattr(message, field, "")
        if key and key in origins:
            return origins[key]
    return None


def start_produce(topic: str, message: Any) -> tuple[Headers | None, Span | None]:
    """Start the PRODUCER span of one record and the headers that carry it: ``(None, None)``
    when tracing is off. Its parent is the consumer span of the record it derives from (same
    ``event_id`` or ``caused_by_event_id``) inside a batch, else the current span.
    End the span with :func:`end_produce` once the broker answered."""
    if _installed.provider is None:
        return None, None
    span = tracer("bus").start_span(
        f"send {topic}",
        context=_origin_of(message),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    )
    traceparent = traceparent_of(trace.set_span_in_context(span))
    return ([(TRACEPARENT, traceparent.encode())] if traceparent else None), span


def end_produce(span: Span, acknowledged: Any) -> None:
    """End the producer span when ``acknowledged`` (the send's future) completes."""

    def done(future: Any) -> None:
        if future.cancelled():
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
        elif (error := future.exception()) is not None:
            fail(span, error)
        span.end()

    acknowledged.add_done_callback(done)


def consuming(group: str, deliveries: Sequence[Consumed]) -> AbstractContextManager[None]:
    """Around the handling of a batch: one CONSUMER span per record, each a child of the
    span that produced it (its ``traceparent`` header). With one record its span is current
    in the handler; with more, what the handler publishes continues the trace of the record
    it derives from (see :func:`start_produce`). Nothing when tracing is off."""
    if _installed.provider is None or not deliveries:
        return _OFF
    return _consuming(group, deliveries)


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


@contextmanager
def _consuming(group: str, deliveries: Sequence[Consumed]) -> Iterator[None]:
    bus_tracer = tracer("bus")
    spans: list[Span] = []
    origins: dict[str, otel_context.Context] = {}
    for delivery in deliveries:
        span = bus_tracer.start_span(
            f"process {delivery.topic}",
            context=parent_from(_header(delivery.headers or (), TRACEPARENT)),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": delivery.topic,
                "messaging.consumer.group.name": group,
                "messaging.destination.partition.id": str(delivery.partition),
                "messaging.kafka.offset": delivery.offset,
            },
        )
        spans.append(span)
        event_id = getattr(delivery.message, "event_id", "")
        if event_id:
            origins[event_id] = trace.set_span_in_context(span)
    origins_token = _ORIGINS.set(origins)
    current = otel_context.attach(trace.set_span_in_context(spans[0])) if len(spans) == 1 else None
    try:
        yield
    except BaseException as error:
        for span in spans:
            fail(span, error)
        raise
    finally:
        if current is not None:
            otel_context.detach(current)
        _ORIGINS.reset(origins_token)
        for span in spans:
            span.end()


# --- HTTP -----------------------------------------------------------------------------------

_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_method(method: str) -> str:
    """The request method as a span may carry it (unknown ones as ``_OTHER``)."""
    return method if method in _HTTP_METHODS else "_OTHER"


@contextmanager
def http_server_span(method: str, traceparent: str | None) -> Iterator[Span]:
    """The SERVER span of one HTTP request, current inside the block; an outside client's
    well-formed ``traceparent`` is its parent, a malformed one is ignored."""
    verb = http_method(method)
    with tracer("gateway.http").start_as_current_span(
        verb,
        context=parent_from(traceparent),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": verb},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as error:
            fail(span, error)
            raise


def http_done(span: Span, method: str, route: str | None, status: int) -> None:
    """Name the span after its route template (never the raw path) and record the status;
    a 5xx marks it failed (a 4xx is the client's)."""
    if route is not None:
        span.update_name(f"{http_method(method)} {route}")
        span.set_attribute("http.route", route)
    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
