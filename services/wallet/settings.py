"""Settings of the wallet service."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator

from services.platform.settings import ServiceSettings
from services.wallet.applepass import PassSigner


class WalletSettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_WALLET_GRPC_PORT``, the PassKit
    web service's ``LODESTAR_WALLET_HTTP_PORT``."""

    grpc_port: int = Field(50055, ge=0, le=65_535, validation_alias="LODESTAR_WALLET_GRPC_PORT")
    passkit_host: str = Field("0.0.0.0", validation_alias="LODESTAR_WALLET_HTTP_HOST")
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

    @model_validator(mode="after")
    def certificates_are_usable(self) -> Self:
        """Fail at start-up, not at the first pass, when the signing files are wrong."""
        signer = self.pass_signer()
        if not signer.pass_type_id:
            raise ValueError(
                "LODESTAR_WALLET_APPLE_CERTIFICATE: the certificate has no pass type id (UID)"
            )
        return self

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
