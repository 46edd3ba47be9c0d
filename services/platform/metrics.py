"""Prometheus metrics shared by every process, and the endpoint that serves them."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from services.platform.dbops import DB_OPERATIONS, OperationCounter

GRPC_REQUESTS = Counter(
    "lodestar_grpc_requests_total",
    "gRPC calls served, by method and status code",
    ["method", "code"],
)
GRPC_LATENCY = Histogram(
    "lodestar_grpc_latency_seconds", "gRPC call latency (server side), by method", ["method"]
)
BUS_PRODUCED = Counter("lodestar_bus_produced_total", "Messages produced", ["topic"])
BUS_CONSUMED = Counter(
    "lodestar_bus_consumed_total",
    "Messages consumed, by outcome: ok (handled) or dead_lettered",
    ["topic", "group", "outcome"],
)
# Label values are bounded: group, topic and partition come from the code and the topic
# configuration, the reason is one of three words, never anything from a message.
CONSUMER_LAG = Gauge(
    "lodestar_consumer_lag",
    "Records of a partition not yet handled by the group (high watermark - committed offset)",
    ["group", "topic", "partition"],
)
BUS_DEAD_LETTERED = Counter(
    "lodestar_bus_dead_lettered_total",
    "Messages sent to the dead-letter topic, by why: undecodable (not the expected "
    "protobuf), poison (its handler refused it), handler_failed (still failing after the "
    "retries)",
    ["group", "topic", "reason"],
)
BUS_BATCH_SECONDS = Histogram(
    "lodestar_bus_batch_seconds", "Time to handle and commit one batch", ["group"]
)
INGEST_EVENTS = Counter(
    "lodestar_ingest_events_total", "Events received by the ingest API", ["type", "outcome"]
)
INGEST_REJECTED = Counter(
    "lodestar_ingest_rejected_total",
    "Events the ingest API refused, by the error code it answered "
    "(invalid_event, malformed_json, malformed_body, payload_too_large, "
    "unsupported_encoding, rate_limited)",
    ["type", "reason"],
)
WALLET_APNS_PUSHES = Counter(
    "lodestar_wallet_apns_pushes_total",
    "Pass update pushes sent to APNs, by final outcome",
    ["outcome"],
)


class DbOperationsCollector(Collector):
    """Exports an :class:`OperationCounter` at scrape time (the listener only bumps a dict):
    ``lodestar_db_operations_total`` and ``lodestar_db_documents_total`` by database,
    command and collection."""

    def __init__(self, counter: OperationCounter) -> None:
        self.counter = counter

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Both families from one snapshot of the counts."""
        labels = ["database", "command", "collection"]
        operations, documents = self.counter.snapshot()
        ops = CounterMetricFamily(
            "lodestar_db_operations",
            "Database commands sent, by command and collection",
            labels=labels,
        )
        for key, value in sorted(operations.items()):
            ops.add_metric(list(key), value)
        docs = CounterMetricFamily(
            "lodestar_db_documents",
            "Documents the database commands wrote or returned, as their replies tell it",
            labels=labels,
        )
        for key, value in sorted(documents.items()):
            docs.add_metric(list(key), value)
        yield ops
        yield docs


REGISTRY.register(DbOperationsCollector(DB_OPERATIONS))

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (constant time)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _guarded(app: WsgiApp, token: str | None) -> WsgiApp:
    """``app`` behind the metrics token, when one is set."""

    def door(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if token is None or bearer_matches(environ.get("HTTP_AUTHORIZATION", ""), token):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"send Authorization: Bearer <LODESTAR_METRICS_TOKEN>\n"]

    return door


class _QuietHandler(WSGIRequestHandler):
    """No access log lines (scrapes every few seconds would drown the service's log)."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def serve_metrics(port: int, host: str = "127.0.0.1", token: str | None = None) -> None:
    """Expose ``/metrics`` on ``host:port`` in a background thread, behind ``token`` when
    one is given; port 0 leaves it off."""
    if not port:
        return
    server = make_server(
        host,
        port,
        _guarded(make_wsgi_app(REGISTRY), token),
        ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
