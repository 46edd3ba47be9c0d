"""Settings of the wallet service."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, model_validator

from services.platform.settings import ServiceSettings
from services.wallet.applepass import PassSigner
from services.wallet.live import LivePolicy


class WalletSettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_WALLET_GRPC_PORT``, the PassKit
    web service's ``LODESTAR_WALLET_HTTP_PORT``."""

    grpc_port: int = Field(50055, ge=0, le=65_535, validation_alias="LODESTAR_WALLET_GRPC_PORT")
    passkit_host: str = Field(
        "127.0.0.1", min_length=1, validation_alias="LODESTAR_WALLET_HTTP_HOST"
    )
    passkit_port: int = Field(8080, ge=0, le=65_535, validation_alias="LODESTAR_WALLET_HTTP_PORT")
    # What phones call back (the pass's webServiceURL; Apple appends /v1/...). HTTPS in
    # production; Apple accepts HTTP only on devices with "Allow HTTP Services" turned on.
    wallet_web_service_url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    # Apple's pass type certificate (PEM), its key (PEM, optionally encrypted) and Apple's
    # WWDR G4 intermediate (PEM or DER). The pass type id and team id come from the
    # certificate.
    wallet_apple_certificate: Path
    wallet_apple_key: Path
    wallet_apple_key_password: SecretStr = SecretStr("")
    wallet_apple_wwdr_certificate: Path
    # APNs token auth: the .p8 auth key, its key id and the team id (default: the pass
    # certificate's team). Without a key no pushes are sent (phones still fetch updates when
    # they open the pass). The URL is Apple's, or the loopback stand-in locally; the CA file
    # makes a stand-in's throwaway CA trusted.
    wallet_apns_url: str = Field("https://api.push.apple.com", pattern=r"^https://[^\s/]+$")
    wallet_apns_auth_key: Path | None = None
    wallet_apns_key_id: str = Field("", pattern=r"^[A-Za-z0-9]{0,20}$")
    wallet_apns_team_id: str = Field("", pattern=r"^[A-Za-z0-9]{0,20}$")
    wallet_apns_ca_file: Path | None = None
    # Google Wallet: the service-account JSON key and the issuer id; without a key, GOOGLE
    # passes are refused. The API, token and save-link URLs are Google's unless overridden.
    wallet_google_service_account: Path | None = None
    wallet_google_issuer_id: str = Field("", pattern=r"^[0-9]{0,30}$")
    wallet_google_api_url: str = Field(
        "https://walletobjects.googleapis.com/walletobjects/v1", pattern=r"^https?://\S+$"
    )
    wallet_google_token_uri: str = Field(
        "https://oauth2.googleapis.com/token", pattern=r"^https?://\S+$"
    )
    wallet_google_save_url: str = Field(
        "https://pay.google.com/gp/v/save/", pattern=r"^https?://\S+$"
    )
    # Live updates: changes within this window share one push; marketing messages per
    # customer per day; tickets are reminded this long before the event; "today" and
    # "tomorrow" are told in this time zone.
    wallet_push_delay_ms: int = Field(100, ge=0, le=60_000)
    wallet_marketing_per_day: int = Field(1, ge=0, le=100)
    wallet_reminder_before_hours: int = Field(24, ge=1, le=24 * 14)
    wallet_reminder_interval_s: float = Field(60.0, gt=0, le=3_600)
    wallet_time_zone: str = "UTC"
    # Signed .pkpass download links (GET /downloads/...): how long one stays valid, and the
    # HMAC key (default: derived from the pass-signing key, so every replica agrees).
    wallet_download_link_ttl_s: int = Field(300, ge=1, le=3_600)
    wallet_download_link_secret: SecretStr | None = Field(None, min_length=16)
    # Pass serials are linked to their customers in identity when issued; a new card
    # starts from the loyalty figures profile has.
    identity_addr: str = "127.0.0.1:50051"
    profile_addr: str = "127.0.0.1:50052"

    @model_validator(mode="after")
    def certificates_are_usable(self) -> Self:
        """Fail at start-up, not at the first pass, when the signing files are wrong."""
        signer = self.pass_signer()
        if not signer.pass_type_id:
            raise ValueError(
                "LODESTAR_WALLET_APPLE_CERTIFICATE: the certificate has no pass type id (UID)"
            )
        if self.wallet_apns_auth_key is not None:
            if not self.wallet_apns_auth_key.is_file():
                raise ValueError(
                    f"LODESTAR_WALLET_APNS_AUTH_KEY: no file at {self.wallet_apns_auth_key}"
                )
            if not self.wallet_apns_key_id:
                raise ValueError("LODESTAR_WALLET_APNS_KEY_ID: required with an APNs auth key")
        if self.wallet_apns_ca_file is not None and not self.wallet_apns_ca_file.is_file():
            raise ValueError(f"LODESTAR_WALLET_APNS_CA_FILE: no file at {self.wallet_apns_ca_file}")
        if self.wallet_google_service_account is not None:
            if not self.wallet_google_service_account.is_file():
                raise ValueError(
                    "LODESTAR_WALLET_GOOGLE_SERVICE_ACCOUNT: no file at "
                    f"{self.wallet_google_service_account}"
                )
            if not self.wallet_google_issuer_id:
                raise ValueError(
                    "LODESTAR_WALLET_GOOGLE_ISSUER_ID: required with a service account"
                )
        try:
            ZoneInfo(self.wallet_time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"LODESTAR_WALLET_TIME_ZONE: unknown time zone {self.wallet_time_zone!r}"
            ) from None
        return self

    def live_policy(self) -> LivePolicy:
        """How live updates speak, from these settings."""
        return LivePolicy(
            marketing_per_day=self.wallet_marketing_per_day,
            reminder_before=timedelta(hours=self.wallet_reminder_before_hours),
            zone=ZoneInfo(self.wallet_time_zone),
        )

    def download_link_secret(self) -> bytes:
        """The HMAC key of download links: the configured one, else one derived from the
        pass-signing key file (a secret every replica already shares)."""
        if self.wallet_download_link_secret is not None:
            return self.wallet_download_link_secret.get_secret_value().encode()
        key = self.wallet_apple_key.read_bytes()
        return hashlib.sha256(b"lodestar pass download links\n" + key).digest()

    def pass_signer(self) -> PassSigner:
        """The signing identity loaded from the configured files."""
        for var, path in (
            ("LODESTAR_WALLET_APPLE_CERTIFICATE", self.wallet_apple_certificate),
            ("LODESTAR_WALLET_APPLE_KEY", self.wallet_apple_key),
            ("LODESTAR_WALLET_APPLE_WWDR_CERTIFICATE", self.wallet_apple_wwdr_certificate),
        ):
            if not path.is_file():
                raise ValueError(f"{var}: no file at {path}")
        return PassSigner.from_files(
            self.wallet_apple_certificate,
            self.wallet_apple_key,
            self.wallet_apple_wwdr_certificate,
            self.wallet_apple_key_password.get_secret_value(),
        )
