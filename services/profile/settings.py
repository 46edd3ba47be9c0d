"""Settings of the profile service."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from services.platform.settings import PiiSettings


class ProfileSettings(PiiSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_PROFILE_GRPC_PORT``."""

    grpc_port: int = Field(50052, ge=0, le=65_535, validation_alias="LODESTAR_PROFILE_GRPC_PORT")
    # Event ids remembered per profile for dedupe; must cover one redelivered batch.
    profile_dedupe_window: int = Field(1_000, ge=1, le=100_000)
    # Traits stored encrypted (comma-separated trait names, as sent).
    profile_pii_traits: str = (
        "email,phone,firstName,lastName,first_name,last_name,name,address,birthday"
    )

    def pii_trait_names(self) -> frozenset[str]:
        """The configured PII trait names."""
        return frozenset(t.strip() for t in self.profile_pii_traits.split(",") if t.strip())

    @model_validator(mode="after")
    def window_covers_a_batch(self) -> Self:
        """A redelivered batch may hold one customer's events only: the window must cover it."""
        if self.profile_dedupe_window < self.kafka_max_batch:
            raise ValueError(
                "LODESTAR_PROFILE_DEDUPE_WINDOW must be >= LODESTAR_KAFKA_MAX_BATCH "
                f"({self.profile_dedupe_window} < {self.kafka_max_batch})"
            )
        return self
