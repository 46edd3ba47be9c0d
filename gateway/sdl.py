"""The schema's SDL, as committed in ``gateway/schema.graphql`` for frontends and code
generators (``python -m gateway sdl`` prints it; a test keeps the file current)."""

from __future__ import annotations

from pathlib import Path

from strawberry.printer import print_schema

from gateway.schema import build_schema
from gateway.settings import GatewaySettings

COMMITTED = Path(__file__).with_name("schema.graphql")


def current_sdl() -> str:
    """The SDL of the schema the gateway serves (its types do not depend on settings)."""
    return print_schema(build_schema(GatewaySettings.model_construct())) + "\n"
