"""``python -m gateway``: the GraphQL and ingest gateway on uvicorn; ``python -m gateway keys
...`` manages the GraphQL API keys (:mod:`gateway.keys_cli`); ``python -m gateway sdl``
prints the schema's SDL."""

from __future__ import annotations

import sys

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.platform import tracing
from services.platform.httpserver import RefusingH11Protocol
from services.platform.logs import configure_logging
from services.platform.runtime import DRAIN_S
from services.platform.settings import load_settings


def main() -> None:
    """Load settings (or exit naming the bad one) and serve HTTP until SIGTERM."""
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level)
    tracing.configure("gateway", settings.tracing_exporter)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        # A request it cannot read is answered 400/431 saying why, not reset.
        http=RefusingH11Protocol,
        # Requests still open this long after SIGTERM are cut (Kubernetes' grace is 30 s).
        timeout_graceful_shutdown=int(DRAIN_S),
    )


if sys.argv[1:2] == ["keys"]:
    from gateway.keys_cli import main as keys_main

    sys.exit(keys_main(sys.argv[2:]))
elif sys.argv[1:] == ["sdl"]:
    from gateway.sdl import current_sdl

    sys.stdout.write(current_sdl())
elif sys.argv[1:]:
    sys.exit(f"unknown command {' '.join(sys.argv[1:])[:80]!r}; expected no argument, keys or sdl")
else:
    main()
