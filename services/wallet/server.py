"""Wiring of the wallet service. So far it serves gRPC health and reflection only."""

from __future__ import annotations

from lodestar.v1 import wallet_pb2, wallet_pb2_grpc
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown
from services.wallet.settings import WalletSettings

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name


async def serve(settings: WalletSettings) -> None:
    """Run until SIGTERM."""
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(
            wallet_pb2_grpc.WalletServiceServicer(), s
        ),
        settings.grpc_default_deadline_s,
    )
    await serve_until_shutdown(server)
