"""Wiring of the identity service: settings -> store -> resolver -> bus -> servicer and
consumers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lodestar.v1 import events_pb2, identity_pb2, identity_pb2_grpc
from services.identity.api import IdentityServicer
from services.identity.consumers import RawEventHandler, identity_export
from services.identity.resolution import Resolver
from services.identity.settings import IdentitySettings
from services.identity.store import IdentityStore
from services.platform import topics
from services.platform.bus import Bus, BusConfig
from services.platform.health import service_health
from services.platform.mongo import database, mongo_client
from services.platform.privacy import PrivacyHandler
from services.platform.rotation import Tally
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown

LAST_SEEN_FLUSH_S = 15.0
SERVICE_NAME = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name


async def serve(settings: IdentitySettings) -> None:
    """Run until SIGTERM: gRPC, the raw-event consumer and the privacy consumer."""
    rules = settings.rules()
    client = mongo_client(settings.mongo_uri, "lodestar-identity")
    store = IdentityStore(
        database(client, settings.mongo_database_prefix, "identity"),
        settings.field_cipher(),
        rules,
    )
    await store.ensure_indexes()
    resolver = Resolver(store, rules, timedelta(seconds=settings.identity_last_seen_resolution_s))
    bus = Bus(BusConfig.from_settings(settings, "identity"))
    await bus.start()
    servicer = IdentityServicer(store, resolver)
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: identity_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, s),
        settings.grpc_default_deadline_s,
        token=settings.grpc_token_value(),
    )
    raw_events = bus.subscribe(
        [topics.EVENTS_RAW], "identity", events_pb2.Event, RawEventHandler(resolver, bus)
    )
    privacy = bus.subscribe(
        [topics.PRIVACY],
        "identity-privacy",
        events_pb2.PrivacyRequest,
        PrivacyHandler(
            "identity",
            bus,
            erase=lambda customer_id: store.erase(customer_id, datetime.now(UTC)),
            export=identity_export(store),
        ),
    )
    health, close_health = service_health(settings.mongo_uri, bus)
    health.report_to(server)
    await serve_until_shutdown(
        server,
        [raw_events, privacy],
        [resolver.flush_last_seen, bus.stop, client.close, close_health],
        periodic=[(LAST_SEEN_FLUSH_S, resolver.flush_last_seen)],
        background=[("dependency-health", health.run)],
    )


async def rotate_keys(settings: IdentitySettings, *, check_only: bool = False) -> list[Tally]:
    """Key rotation of the identity database, for the platform's rotation command
    (``python -m services.rotate_keys``)."""
    client = mongo_client(settings.mongo_uri, "lodestar-identity-rotate")
    try:
        store = IdentityStore(
            database(client, settings.mongo_database_prefix, "identity"),
            settings.field_cipher(),
            settings.rules(),
        )
        return [await store.rotate_keys(check_only=check_only)]
    finally:
        client.close()
