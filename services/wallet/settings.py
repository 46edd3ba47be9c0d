"""Settings of the wallet service."""

from __future__ import annotations

from pydantic import Field

from services.platform.settings import ServiceSettings


class WalletSettings(ServiceSettings):
    """``LODESTAR_*`` settings; the gRPC port is ``LODESTAR_WALLET_GRPC_PORT``."""

    grpc_port: int = Field(50055, ge=0, le=65_535, validation_alias="LODESTAR_WALLET_GRPC_PORT")
