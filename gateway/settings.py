"""Settings of the gateway (GraphQL read side and Segment-spec ingest API)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from services.platform.settings import LOOPBACK_HOSTS, CommonSettings


class GatewaySettings(CommonSettings):
    """``LODESTAR_*`` settings. The write and API keys are required: there is no safe default."""

    # Loopback unless opened on purpose (Kubernetes sets 0.0.0.0).
    http_host: str = Field("127.0.0.1", min_length=1, validation_alias="LODESTAR_GATEWAY_HTTP_HOST")
    http_port: int = Field(8000, ge=0, le=65_535, validation_alias="LODESTAR_GATEWAY_HTTP_PORT")
    # HTTP Basic username of the ingest API (Segment's "write key").
    write_key: SecretStr = Field(min_length=8)
    # Bearer token of the GraphQL API.
    api_key: SecretStr = Field(min_length=8)
    identity_addr: str = "127.0.0.1:50051"
    profile_addr: str = "127.0.0.1:50052"
    segmentation_addr: str = "127.0.0.1:50053"
    recommendation_addr: str = "127.0.0.1:50054"
    wallet_addr: str = "127.0.0.1:50055"
    grpc_timeout_s: float = Field(5.0, gt=0, le=60)
    max_event_bytes: int = Field(32 * 1024, ge=1_024)
    max_batch_bytes: int = Field(500 * 1024, ge=1_024)
    # Serve the GraphiQL page to browsers without the API key: local development only.
    graphiql: bool = Field(False, validation_alias="LODESTAR_GATEWAY_GRAPHIQL")
    # Bounds on one GraphQL request, far above what a frontend sends: the body (or GET query
    # string) in bytes, and the document's tokens, depth and aliases.
    graphql_max_bytes: int = Field(64 * 1024, ge=4 * 1024, le=1024 * 1024)
    graphql_max_tokens: int = Field(2_000, ge=500, le=20_000)
    graphql_max_depth: int = Field(12, ge=6, le=50)
    graphql_max_aliases: int = Field(30, ge=1, le=500)

    @model_validator(mode="after")
    def public_metrics_are_locked(self) -> Self:
        """``/metrics`` shares the public HTTP door: beyond loopback it needs the token."""
        if self.metrics_token is None and self.http_host not in LOOPBACK_HOSTS:
            raise ValueError(
                "LODESTAR_METRICS_TOKEN is required when LODESTAR_GATEWAY_HTTP_HOST is not "
                "loopback (/metrics is served on it)"
            )
        return self
