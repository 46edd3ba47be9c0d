"""Settings of the profile service."""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from pydantic import Field, model_validator

from services.platform.settings import PiiSettings
from services.profile.commerce import LoyaltyRules, minor_units
from services.profile.store import TimelineSettings


class ProfileSettings(PiiSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_PROFILE_GRPC_PORT``."""

    grpc_port: int = Field(50052, ge=0, le=65_535, validation_alias="LODESTAR_PROFILE_GRPC_PORT")
    # Event ids remembered per profile for dedupe; must cover one redelivered batch.
    profile_dedupe_window: int = Field(1_000, ge=1, le=100_000)
    # Traits stored encrypted (comma-separated trait names, as sent).
    profile_pii_traits: str = (
        "email,phone,firstName,lastName,first_name,last_name,name,address,birthday"
    )

    # Loyalty: points per unit of the base currency spent, cashback percentage, and tiers
    # reached by base-currency spend over the last 12 months ("Silver=500,Gold=1500,...").
    profile_base_currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    profile_points_per_unit: Decimal = Field(Decimal(1), ge=0, le=1_000)
    profile_cashback_percent: Decimal = Field(Decimal(2), ge=0, le=100)
    profile_tiers: str = "Bronze=0,Silver=500,Gold=1500,Platinum=5000"

    def loyalty_rules(self) -> LoyaltyRules:
        """The loyalty rules these settings describe."""
        return LoyaltyRules(
            base_currency=self.profile_base_currency,
            points_per_unit=self.profile_points_per_unit,
            cashback_percent=self.profile_cashback_percent,
            tiers=parse_tiers(self.profile_tiers),
        )

    @model_validator(mode="after")
    def tiers_are_valid(self) -> Self:
        """Stop start-up on a tier list that cannot be read."""
        parse_tiers(self.profile_tiers)
        return self

    # The timeline of recent events: kept this many days, at most this many shown.
    profile_timeline_enabled: bool = True
    profile_timeline_ttl_days: int = Field(180, ge=1, le=3_650)
    profile_timeline_cap: int = Field(1_000, ge=1, le=100_000)

    def timeline(self) -> TimelineSettings:
        """The timeline settings."""
        return TimelineSettings(
            enabled=self.profile_timeline_enabled,
            ttl_s=self.profile_timeline_ttl_days * 24 * 3600,
            cap=self.profile_timeline_cap,
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


def parse_tiers(spec: str) -> tuple[tuple[str, int], ...]:
    """``"Bronze=0,Silver=500"`` -> ((name, threshold in minor units), ...), lowest first."""
    tiers = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, amount = item.partition("=")
        threshold = minor_units(amount.strip())
        if not name.strip() or threshold is None or threshold < 0:
            raise ValueError(f"LODESTAR_PROFILE_TIERS: {item!r} is not Name=amount")
        tiers.append((name.strip(), threshold))
    if not tiers or tiers[0][1] != 0:
        raise ValueError("LODESTAR_PROFILE_TIERS: the first tier must start at 0")
    if [t for _, t in tiers] != sorted({t for _, t in tiers}):
        raise ValueError("LODESTAR_PROFILE_TIERS: thresholds must increase")
    return tuple(tiers)
