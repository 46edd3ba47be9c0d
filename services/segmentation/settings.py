"""Settings of the segmentation service."""

from __future__ import annotations

from pydantic import Field

from services.platform.pii import PII_TRAITS
from services.platform.settings import ServiceSettings

DEFAULT_PII_TRAITS = ",".join(sorted(PII_TRAITS))


class SegmentationSettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_SEGMENTATION_GRPC_PORT``."""

    grpc_port: int = Field(
        50053, ge=0, le=65_535, validation_alias="LODESTAR_SEGMENTATION_GRPC_PORT"
    )
    # Recent events kept for event conditions; a rule's window may not exceed it.
    segmentation_event_retention_days: int = Field(90, ge=1, le=3_650)
    # How often time-window segments are re-checked, and the segment list reloaded.
    segmentation_recheck_s: float = Field(300, ge=1)
    segmentation_catalog_refresh_s: float = Field(5, ge=0.1)
    # Predictive scores: refit and rescore this often; time unit of the purchase models
    # (days per unit: 7 = weeks) and the monthly discount rate of lifetime value.
    segmentation_scores_interval_s: float = Field(6 * 3600, ge=60)
    segmentation_time_unit_days: float = Field(7, gt=0, le=365)
    segmentation_clv_monthly_discount: float = Field(0.01, ge=0, lt=1)
    # Traits rules may test for existence only (the profile service's PII traits).
    segmentation_pii_traits: str = DEFAULT_PII_TRAITS

    def pii_trait_names(self) -> frozenset[str]:
        """The configured PII trait names."""
        return frozenset(t.strip() for t in self.segmentation_pii_traits.split(",") if t.strip())
