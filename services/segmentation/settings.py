"""Settings of the segmentation service."""

from __future__ import annotations

from pydantic import Field

from services.platform.settings import ServiceSettings


class SegmentationSettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_SEGMENTATION_GRPC_PORT``."""

    grpc_port: int = Field(
        50053, ge=0, le=65_535, validation_alias="LODESTAR_SEGMENTATION_GRPC_PORT"
    )
