"""Wiring of the recommendation service. So far it serves gRPC health and reflection only."""

from __future__ import annotations

from lodestar.v1 import recommendation_pb2, recommendation_pb2_grpc
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown
from services.recommendation.settings import RecommendationSettings

SERVICE_NAME = recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name


async def serve(settings: RecommendationSettings) -> None:
    """Run until SIGTERM."""
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(
            recommendation_pb2_grpc.RecommendationServiceServicer(), s
        ),
        settings.grpc_default_deadline_s,
    )
    await serve_until_shutdown(server)
