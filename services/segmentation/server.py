"""Wiring of the segmentation service: settings -> store -> bus -> audiences -> servicer,
consumers and scheduled jobs."""

from __future__ import annotations

from typing import Any

from lodestar.v1 import events_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Subscription
from services.platform.health import service_health
from services.platform.mongo import database, mongo_client
from services.platform.privacy import PrivacyHandler
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown
from services.segmentation.api import SegmentationServicer
from services.segmentation.audience import Audiences
from services.segmentation.consumers import (
    ProfileChangeHandler,
    ResolvedEventHandler,
    merge_handler,
)
from services.segmentation.definitions import SegmentDefinitions
from services.segmentation.scoring import Scoring, ScoringSettings
from services.segmentation.settings import SegmentationSettings
from services.segmentation.store import SegmentationStore

SERVICE_NAME = segmentation_pb2.DESCRIPTOR.services_by_name["SegmentationService"].full_name


async def serve(settings: SegmentationSettings) -> None:
    """Run until SIGTERM: gRPC, the profile-change, event, merge and privacy consumers, the
    catalogue refresh, the time-window recheck and the score refresh."""
    client = mongo_client(settings.mongo_uri, "lodestar-segmentation")
    store = SegmentationStore(
        database(client, settings.mongo_database_prefix, "segmentation"),
        settings.segmentation_event_retention_days * 86_400,
    )
    await store.ensure_indexes()
    bus = Bus(BusConfig.from_settings(settings, "segmentation"))
    await bus.start()
    audiences = Audiences(store, bus)
    definitions = SegmentDefinitions(store, audiences, settings.pii_trait_names())
    await definitions.refresh()
    scoring = Scoring(
        store,
        definitions,
        ScoringSettings(
            time_unit_days=settings.segmentation_time_unit_days,
            monthly_discount=settings.segmentation_clv_monthly_discount,
        ),
    )
    servicer = SegmentationServicer(definitions, store, scoring)
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: segmentation_pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, s),
        settings.grpc_default_deadline_s,
        token=settings.grpc_token_value(),
    )

    async def erase(customer_id: str) -> None:
        await audiences.remove_customer(customer_id, cause=f"erase:{customer_id}")
        await store.erase(customer_id)

    subscriptions: list[Subscription[Any]] = [
        bus.subscribe(
            [topics.PROFILE_CHANGED],
            "segmentation",
            events_pb2.ProfileChanged,
            ProfileChangeHandler(audiences),
        ),
        bus.subscribe(
            [topics.EVENTS_RESOLVED],
            "segmentation-events",
            events_pb2.Event,
            ResolvedEventHandler(audiences),
        ),
        bus.subscribe(
            [topics.IDENTITY_MERGED],
            "segmentation-merges",
            events_pb2.IdentityMerged,
            merge_handler(audiences),
        ),
        bus.subscribe(
            [topics.PRIVACY],
            "segmentation-privacy",
            events_pb2.PrivacyRequest,
            PrivacyHandler("segmentation", bus, erase=erase, export=store.export),
        ),
    ]
    health, close_health = service_health(settings.mongo_uri, bus)
    health.report_to(server)
    await serve_until_shutdown(
        server,
        subscriptions,
        [bus.stop, client.close, close_health],
        periodic=[
            (settings.segmentation_catalog_refresh_s, definitions.refresh),
            (settings.segmentation_recheck_s, definitions.recheck_time_windows),
            (settings.segmentation_scores_interval_s, scoring.recompute),
        ],
        background=[("dependency-health", health.run)],
    )
