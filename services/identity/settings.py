"""Settings of the identity service."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from services.identity.rules import IdentityRules
from services.platform.settings import PiiSettings


class IdentitySettings(PiiSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_IDENTITY_GRPC_PORT``."""

    grpc_port: int = Field(50051, ge=0, le=65_535, validation_alias="LODESTAR_IDENTITY_GRPC_PORT")
    # An identifier's last-seen time is rewritten at most this often (write amplification).
    identity_last_seen_resolution_s: int = Field(3_600, ge=0, le=86_400)
    # "crm_id,shop_id": extra identifier types; they rank just above anonymous_id.
    identity_custom_types: str = ""
    # "email=3,device_id=20": per-type limits per customer, over the defaults.
    identity_limits: str = ""
    # JSON list of regexes; matching values never link anything (added to the defaults).
    identity_blocked_patterns: list[str] = Field(default_factory=list)
    identity_max_customers_per_event: int = Field(5, ge=2, le=100)
    identity_phone_default_region: str = Field("US", pattern=r"^[A-Z]{2}$")

    @model_validator(mode="after")
    def rules_are_valid(self) -> Self:
        """Build the rules once at start-up so a bad one stops it with a reason."""
        self.rules()
        return self

    def rules(self) -> IdentityRules:
        """The identity rules these settings describe."""
        limits = {}
        for item in filter(None, (p.strip() for p in self.identity_limits.split(","))):
            name, _, number = item.partition("=")
            if not number.strip().isdigit():
                raise ValueError(f"LODESTAR_IDENTITY_LIMITS: {item!r} is not type=number")
            limits[name.strip()] = int(number)
        try:
            return IdentityRules.build(
                custom_types=[
                    t.strip() for t in self.identity_custom_types.split(",") if t.strip()
                ],
                limits=limits,
                blocked_patterns=self.identity_blocked_patterns,
                max_customers_per_event=self.identity_max_customers_per_event,
                default_region=self.identity_phone_default_region,
            )
        except ValueError as exc:
            raise ValueError(f"identity rules: {exc}") from None
