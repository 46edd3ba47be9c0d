"""``python -m gateway``: the GraphQL and ingest gateway on uvicorn."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.platform.logs import configure_logging
from services.platform.settings import load_settings


def main() -> None:
    """Load settings (or exit naming the bad one) and serve HTTP until SIGTERM."""
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


main()
