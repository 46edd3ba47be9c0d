"""Settings of the profile service."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Literal, Self

from pydantic import Field, model_validator

from services.platform.settings import PiiSettings
from services.profile.commerce import PURCHASES, SPEND, LoyaltyRules, minor_units
from services.profile.privacy_requests import PrivacyRequestSettings
from services.profile.timeline import TimelineSettings


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
    # reached over the last 12 months by base-currency spend ("Silver=500,Gold=1500,...")
    # or, with LODESTAR_PROFILE_TIER_BASIS=purchases, by orders ("Silver=5,Gold=15,...").
    profile_base_currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    profile_points_per_unit: Decimal = Field(Decimal(1), ge=0, le=1_000)
    profile_cashback_percent: Decimal = Field(Decimal(2), ge=0, le=100)
    profile_tier_basis: Literal["spend", "purchases"] = "spend"
    profile_tiers: str | None = None

    def loyalty_rules(self) -> LoyaltyRules:
        """The loyalty rules these settings describe."""
        return LoyaltyRules(
            base_currency=self.profile_base_currency,
            points_per_unit=self.profile_points_per_unit,
            cashback_percent=self.profile_cashback_percent,
            tiers=parse_tiers(self.tier_spec(), self.profile_tier_basis),
            tier_basis=self.profile_tier_basis,
        )

    def tier_spec(self) -> str:
        """The configured tiers, or the defaults for the tier basis."""
        return self.profile_tiers or DEFAULT_TIERS[self.profile_tier_basis]

    @model_validator(mode="after")
    def tiers_are_valid(self) -> Self:
        """Stop start-up on a tier list that cannot be read."""
        parse_tiers(self.tier_spec(), self.profile_tier_basis)
        return self

    # A session ends after this many minutes without activity.
    profile_session_timeout_minutes: int = Field(30, ge=1, le=24 * 60)

    def session_timeout(self) -> timedelta:
        """The inactivity that ends a session."""
        return timedelta(minutes=self.profile_session_timeout_minutes)

    # Privacy requests: the services that must answer before a request is done (each that
    # holds customer data), and how long request records and exports are kept.
    profile_privacy_services: str = Field(
        "identity,profile,segmentation,recommendation,wallet", pattern=r"^[a-z_]+(,[a-z_]+)*$"
    )
    profile_privacy_record_days: int = Field(30, ge=1, le=3_650)

    def privacy_requests(self) -> PrivacyRequestSettings:
        """The privacy-request settings."""
        return PrivacyRequestSettings(
            services=tuple(self.profile_privacy_services.split(",")),
            ttl_s=self.profile_privacy_record_days * 24 * 3600,
        )

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


DEFAULT_TIERS = {
    SPEND: "Bronze=0,Silver=500,Gold=1500,Platinum=5000",
    PURCHASES: "Bronze=0,Silver=5,Gold=15,Platinum=40",
}


def parse_tiers(spec: str, basis: str = SPEND) -> tuple[tuple[str, int], ...]:
    """``"Bronze=0,Silver=500"`` -> ((name, threshold), ...), lowest first; thresholds are
    minor units of spend, or whole orders for the ``purchases`` basis."""
    tiers = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, amount = item.partition("=")
        if basis == PURCHASES:
            threshold = int(amount) if amount.strip().isdigit() else None
        else:
            threshold = minor_units(amount.strip())
        if not name.strip() or threshold is None or threshold < 0:
            unit = "a whole number of orders" if basis == PURCHASES else "an amount"
            raise ValueError(f"LODESTAR_PROFILE_TIERS: {item!r} is not Name=<{unit}>")
        tiers.append((name.strip(), threshold))
    if not tiers or tiers[0][1] != 0:
        raise ValueError("LODESTAR_PROFILE_TIERS: the first tier must start at 0")
    if [t for _, t in tiers] != sorted({t for _, t in tiers}):
        raise ValueError("LODESTAR_PROFILE_TIERS: thresholds must increase")
    return tuple(tiers)
