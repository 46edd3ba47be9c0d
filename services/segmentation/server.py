"""Wiring of the segmentation service. So far it serves gRPC health and reflection only."""

from __future__ import annotations

from lodestar.v1 import segmentation_pb2, segmentation_pb2_grpc
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown
from services.segmentation.settings import SegmentationSettings

SERVICE_NAME = segmentation_pb2.DESCRIPTOR.services_by_name["SegmentationService"].full_name


async def serve(settings: SegmentationSettings) -> None:
    """Run until SIGTERM."""
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: segmentation_pb2_grpc.add_SegmentationServiceServicer_to_server(
            segmentation_pb2_grpc.SegmentationServiceServicer(), s
        ),
        settings.grpc_default_deadline_s,
    )
    await serve_until_shutdown(server)
