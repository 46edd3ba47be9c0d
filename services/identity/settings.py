"""Settings of the identity service."""

from __future__ import annotations

from pydantic import Field

from services.platform.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_IDENTITY_GRPC_PORT``."""

    grpc_port: int = Field(50051, ge=0, le=65_535, validation_alias="LODESTAR_IDENTITY_GRPC_PORT")
    # An identifier's last-seen time is rewritten at most this often (write amplification).
    identity_last_seen_resolution_s: int = Field(60, ge=0, le=86_400)
