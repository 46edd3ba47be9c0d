"""Settings of the gateway (GraphQL read side and Segment-spec ingest API)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from gateway.keys_settings import KeyStoreSettings
from services.platform.settings import LOOPBACK_HOSTS

# A comma-separated environment variable, read as a tuple of its trimmed non-empty items.
CommaList = Annotated[tuple[str, ...], NoDecode]


class GatewaySettings(KeyStoreSettings):
    """``LODESTAR_*`` settings. The write key is required: there is no safe default. GraphQL
    API keys live in the gateway's own database (``python -m gateway keys``)."""

    # Loopback unless opened on purpose (Kubernetes sets 0.0.0.0).
    http_host: str = Field("127.0.0.1", min_length=1, validation_alias="LODESTAR_GATEWAY_HTTP_HOST")
    http_port: int = Field(8000, ge=0, le=65_535, validation_alias="LODESTAR_GATEWAY_HTTP_PORT")
    # HTTP Basic username of the ingest API (Segment's "write key").
    write_key: SecretStr = Field(min_length=8)
    identity_addr: str = "127.0.0.1:50051"
    profile_addr: str = "127.0.0.1:50052"
    segmentation_addr: str = "127.0.0.1:50053"
    recommendation_addr: str = "127.0.0.1:50054"
    wallet_addr: str = "127.0.0.1:50055"
    grpc_timeout_s: float = Field(5.0, gt=0, le=60)
    max_event_bytes: int = Field(32 * 1024, ge=1_024)
    max_batch_bytes: int = Field(500 * 1024, ge=1_024)
    # Calls in one /v1/batch (Segment's SDKs send far fewer; a batch is also capped in bytes).
    ingest_max_batch_events: int = Field(2_500, ge=1, le=100_000)
    # Browser origins the ingest routes answer CORS for ("*" for any); none by default.
    ingest_cors_origins: CommaList = ()
    # Proxies (IPs or CIDRs) whose X-Forwarded-For is believed for context.ip; none by default.
    ingest_trusted_proxies: CommaList = ()
    # Token bucket per write key, counted in events: the sustained rate and the burst.
    ingest_rate_limit_per_s: float = Field(2_000.0, gt=0, le=1_000_000)
    ingest_rate_limit_burst: int = Field(10_000, ge=1, le=10_000_000)
    # Serve the GraphiQL page to browsers without the API key: local development only.
    graphiql: bool = Field(False, validation_alias="LODESTAR_GATEWAY_GRAPHIQL")
    # Bounds on one GraphQL request, far above what a frontend sends: the body (or GET query
    # string) in bytes, and the document's tokens, depth and aliases.
    graphql_max_bytes: int = Field(64 * 1024, ge=4 * 1024, le=1024 * 1024)
    graphql_max_tokens: int = Field(2_000, ge=500, le=20_000)
    graphql_max_depth: int = Field(12, ge=6, le=50)
    graphql_max_aliases: int = Field(30, ge=1, le=500)
    # Mutations (issue 15, write side): how long trainRecommender and recomputeScores may
    # take; they refit models over every customer, far longer than a read.
    graphql_long_call_timeout_s: float = Field(300.0, gt=0, le=3_600)
    # Query cost limit (gateway/cost.py): the most an operation may cost, checked with its
    # variables before it runs. The whole 360-degree view (every field, pages of 20) costs
    # about 1,030 a customer, so 100 customers fit (102,518); with 100 timeline entries each
    # (about 1,750 a customer, 174,518) they do not.
    graphql_max_cost: int = Field(150_000, ge=100, le=10_000_000)

    # --- Live subscriptions (graphql-transport-ws) ---
    # Events waiting for one subscriber; one more and it is dropped (it fell behind).
    graphql_subscriber_queue: int = Field(100, ge=1, le=100_000)
    # Subscriptions (operations) running at once on one WebSocket connection.
    graphql_max_subscriptions_per_connection: int = Field(10, ge=1, le=1_000)
    # Seconds a new connection has to send connection_init before it is closed (4408).
    graphql_ws_init_timeout_s: float = Field(10.0, gt=0, le=300)
    # Seconds between the server's graphql-transport-ws ping messages on each connection.
    graphql_ws_ping_interval_s: float = Field(15.0, gt=0, le=3_600)
    # Browser origins allowed to open the socket ("*" for any): the key travels in
    # connection_init, never in a cookie, so another origin cannot borrow a session.
    graphql_ws_allowed_origins: CommaList = ("*",)

    # --- API keys and their limits (issue 15, the doors) ---
    # Token bucket per API key, counted in HTTP requests: the sustained rate and the burst.
    graphql_rate_limit_per_s: float = Field(500.0, gt=0, le=1_000_000)
    graphql_rate_limit_burst: int = Field(1_000, ge=1, le=10_000_000)

    @field_validator(
        "ingest_cors_origins", "ingest_trusted_proxies", "graphql_ws_allowed_origins", mode="before"
    )
    @classmethod
    def comma_list(cls, value: Any) -> Any:
        """``a, b`` from the environment as ``("a", "b")``."""
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("ingest_cors_origins")
    @classmethod
    def origins_are_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each origin is ``*`` or ``scheme://host[:port]`` without a path."""
        for origin in value:
            scheme, sep, rest = origin.partition("://")
            if origin != "*" and (
                scheme not in ("http", "https") or not sep or not rest or "/" in rest
            ):
                raise ValueError(f"{origin[:80]!r} is not an origin like https://shop.example")
        return value

    @field_validator("ingest_trusted_proxies")
    @classmethod
    def proxies_are_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each trusted proxy is an IP address or a CIDR network."""
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy[:80]!r} is not an IP address or CIDR network") from None
        return value

    @model_validator(mode="after")
    def a_full_batch_fits_the_burst(self) -> Self:
        """A batch is counted whole against the rate limit, so the largest must fit the burst."""
        if self.ingest_rate_limit_burst < self.ingest_max_batch_events:
            raise ValueError(
                "LODESTAR_INGEST_RATE_LIMIT_BURST must be at least LODESTAR_INGEST_MAX_BATCH_EVENTS"
            )
        return self

    @model_validator(mode="after")
    def public_metrics_are_locked(self) -> Self:
        """``/metrics`` shares the public HTTP door: beyond loopback it needs the token."""
        if self.metrics_token is None and self.http_host not in LOOPBACK_HOSTS:
            raise ValueError(
                "LODESTAR_METRICS_TOKEN is required when LODESTAR_GATEWAY_HTTP_HOST is not "
                "loopback (/metrics is served on it)"
            )
        return self
