"""Settings of the recommendation service."""

from __future__ import annotations

from pydantic import Field

from services.platform.settings import ServiceSettings


class RecommendationSettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_RECOMMENDATION_GRPC_PORT``."""

    grpc_port: int = Field(
        50054, ge=0, le=65_535, validation_alias="LODESTAR_RECOMMENDATION_GRPC_PORT"
    )
