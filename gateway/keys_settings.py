"""Settings of the GraphQL API key store: what ``python -m gateway keys`` needs, and a part
of the gateway's own settings (:class:`gateway.settings.GatewaySettings` extends it)."""

from __future__ import annotations

from pydantic import Field

from services.platform.settings import CommonSettings


class KeyStoreSettings(CommonSettings):
    """Where the GraphQL API keys are kept: all ``python -m gateway keys`` needs."""

    # The API keys (hashed) are in <prefix>_gateway.api_keys, like the services' databases.
    mongo_uri: str = Field("mongodb://127.0.0.1:27017", pattern=r"^mongodb(\+srv)?://")
    mongo_database_prefix: str = Field("lodestar", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    # How long a verified (or unknown) key is remembered: a revoked key stops within this.
    graphql_key_cache_ttl_s: float = Field(5.0, ge=0, le=300)
    # Keys remembered at most (known and unknown alike), so made-up keys cannot grow memory.
    graphql_key_cache_size: int = Field(10_000, ge=100, le=1_000_000)
