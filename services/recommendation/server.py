"""Wiring of the recommendation service: settings -> store -> bus -> serving and trainer ->
servicer, consumers and scheduled jobs (model poll and training)."""

from __future__ import annotations

from typing import Any

from lodestar.v1 import events_pb2, recommendation_pb2, recommendation_pb2_grpc
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Subscription
from services.platform.health import service_health
from services.platform.mongo import database, mongo_client
from services.platform.privacy import PrivacyHandler
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown
from services.recommendation.api import RecommendationServicer
from services.recommendation.consumers import ResolvedEventHandler, merge_handler
from services.recommendation.serving import Recommendations
from services.recommendation.settings import RecommendationSettings
from services.recommendation.store import RecommendationStore
from services.recommendation.trainer import Trainer

SERVICE_NAME = recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name


async def serve(settings: RecommendationSettings) -> None:
    """Run until SIGTERM: gRPC, the event, merge and privacy consumers, the model poll and
    the training schedule."""
    client = mongo_client(settings.mongo_uri, "lodestar-recommendation")
    store = RecommendationStore(database(client, settings.mongo_database_prefix, "recommendation"))
    await store.ensure_indexes()
    serving = Recommendations(store)
    await serving.refresh()
    trainer = Trainer(store, serving, settings.training_plan())
    bus = Bus(BusConfig.from_settings(settings, "recommendation"))
    await bus.start()
    servicer = RecommendationServicer(serving, trainer, store)
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(servicer, s),
        settings.grpc_default_deadline_s,
        token=settings.grpc_token_value(),
    )
    subscriptions: list[Subscription[Any]] = [
        bus.subscribe(
            [topics.EVENTS_RESOLVED],
            "recommendation",
            events_pb2.Event,
            ResolvedEventHandler(store),
        ),
        bus.subscribe(
            [topics.IDENTITY_MERGED],
            "recommendation-merges",
            events_pb2.IdentityMerged,
            merge_handler(store),
        ),
        bus.subscribe(
            [topics.PRIVACY],
            "recommendation-privacy",
            events_pb2.PrivacyRequest,
            PrivacyHandler("recommendation", bus, erase=serving.erase, export=serving.export),
        ),
    ]
    health, close_health = service_health(settings.mongo_uri, bus)
    health.report_to(server)
    await serve_until_shutdown(
        server,
        subscriptions,
        [bus.stop, client.close, close_health],
        periodic=[
            (settings.recommendation_model_poll_s, serving.refresh),
            (settings.recommendation_train_interval_s, trainer.scheduled),
        ],
        background=[("dependency-health", health.run)],
    )
