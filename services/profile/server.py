"""Wiring of the profile service: settings -> store -> bus -> servicer and consumer."""

from __future__ import annotations

import grpc

from lodestar.v1 import events_pb2, privacy_pb2, privacy_pb2_grpc, profile_pb2, profile_pb2_grpc
from services.platform import topics
from services.platform.bus import Bus, BusConfig
from services.platform.health import service_health
from services.platform.mongo import database, mongo_client
from services.platform.privacy import PrivacyHandler
from services.platform.rotation import Tally
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown
from services.profile.api import PrivacyServicer, ProfileServicer
from services.profile.consumers import (
    CompletionHandler,
    ResolvedEventHandler,
    merge_handler,
    privacy_export,
)
from services.profile.privacy_requests import PrivacyRequests
from services.profile.settings import ProfileSettings
from services.profile.store import ProfileStore
from services.profile.store.privacy import PrivacyRequestStore

SERVICE_NAME = profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name
PRIVACY_SERVICE_NAME = privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"].full_name


async def serve(settings: ProfileSettings) -> None:
    """Run until SIGTERM: gRPC reads and the resolved-event consumer."""
    client = mongo_client(settings.mongo_uri, "lodestar-profile")
    store = ProfileStore(
        database(client, settings.mongo_database_prefix, "profile"),
        settings.profile_dedupe_window,
        settings.field_cipher(),
        settings.pii_trait_names(),
        settings.timeline(),
        session_timeout=settings.session_timeout(),
    )
    request_store = PrivacyRequestStore(
        database(client, settings.mongo_database_prefix, "profile"),
        settings.field_cipher(),
        settings.privacy_requests(),
    )
    requests = PrivacyRequests(request_store, settings.privacy_requests())
    await store.ensure_indexes()
    await request_store.ensure_indexes()
    bus = Bus(BusConfig.from_settings(settings, "profile"))
    await bus.start()
    servicer = ProfileServicer(store, settings.loyalty_rules())
    privacy_servicer = PrivacyServicer(requests, bus)

    def register(server: grpc.aio.Server) -> None:
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, server)
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(privacy_servicer, server)

    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME, PRIVACY_SERVICE_NAME],
        register,
        settings.grpc_default_deadline_s,
        token=settings.grpc_token_value(),
    )
    resolved_events = bus.subscribe(
        [topics.EVENTS_RESOLVED],
        "profile",
        events_pb2.Event,
        ResolvedEventHandler(store, bus, settings.loyalty_rules()),
    )
    merges = bus.subscribe(
        [topics.IDENTITY_MERGED], "profile-merges", events_pb2.IdentityMerged, merge_handler(store)
    )
    privacy = bus.subscribe(
        [topics.PRIVACY],
        "profile-privacy",
        events_pb2.PrivacyRequest,
        PrivacyHandler("profile", bus, erase=store.erase, export=privacy_export(store)),
    )
    answers = bus.subscribe(
        [topics.PRIVACY_COMPLETED],
        "profile-privacy-status",
        events_pb2.PrivacyCompleted,
        CompletionHandler(requests),
    )
    health, close_health = service_health(settings.mongo_uri, bus)
    health.report_to(server)
    await serve_until_shutdown(
        server,
        [resolved_events, merges, privacy, answers],
        [bus.stop, client.close, close_health],
        background=[("dependency-health", health.run)],
    )


async def rotate_keys(settings: ProfileSettings, *, check_only: bool = False) -> list[Tally]:
    """Key rotation of the profile database (PII traits, timeline, privacy exports), for the
    platform's rotation command (``python -m services.rotate_keys``)."""
    client = mongo_client(settings.mongo_uri, "lodestar-profile-rotate")
    try:
        db = database(client, settings.mongo_database_prefix, "profile")
        cipher = settings.field_cipher()
        store = ProfileStore(db, settings.profile_dedupe_window, cipher, settings.pii_trait_names())
        requests = PrivacyRequestStore(db, cipher, settings.privacy_requests())
        return [
            *await store.rotate_keys(check_only=check_only),
            await requests.rotate_keys(check_only=check_only),
        ]
    finally:
        client.close()
