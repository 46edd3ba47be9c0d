"""Prometheus metrics shared by every process, and the endpoint that serves them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

GRPC_REQUESTS = Counter("lodestar_grpc_requests_total", "gRPC calls served", ["method", "code"])
GRPC_LATENCY = Histogram("lodestar_grpc_latency_seconds", "gRPC call latency", ["method"])
BUS_PRODUCED = Counter("lodestar_bus_produced_total", "Messages produced", ["topic"])
BUS_CONSUMED = Counter(
    "lodestar_bus_consumed_total", "Messages consumed", ["topic", "group", "outcome"]
)
BUS_BATCH_SECONDS = Histogram(
    "lodestar_bus_batch_seconds", "Time to handle and commit one batch", ["group"]
)
INGEST_EVENTS = Counter(
    "lodestar_ingest_events_total", "Events received by the ingest API", ["type", "outcome"]
)
WALLET_APNS_PUSHES = Counter(
    "lodestar_wallet_apns_pushes_total",
    "Pass update pushes sent to APNs, by final outcome",
    ["outcome"],
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` on ``host:port`` in a background thread; port 0 leaves it off."""
    if port:
        start_http_server(port, addr=host)
