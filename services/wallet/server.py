"""Wiring of the wallet service: settings -> store -> passes -> gRPC servicer and the PassKit
web service (HTTP) in one process."""

from __future__ import annotations

from lodestar.v1 import wallet_pb2, wallet_pb2_grpc
from services.platform.mongo import database, mongo_client
from services.platform.rpc import GrpcServer
from services.platform.runtime import serve_until_shutdown
from services.wallet.api import WalletServicer
from services.wallet.http import HttpServer
from services.wallet.passes import WalletPasses
from services.wallet.settings import WalletSettings
from services.wallet.store import WalletStore
from services.wallet.webservice import PassKitWebService

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name


async def serve(settings: WalletSettings) -> None:
    """Run gRPC and the PassKit web service until SIGTERM."""
    client = mongo_client(settings.mongo_uri, "lodestar-wallet")
    store = WalletStore(database(client, settings.mongo_database_prefix, "wallet"))
    await store.ensure_indexes()
    passes = WalletPasses(store, settings.pass_signer(), settings.wallet_web_service_url)
    servicer = WalletServicer(passes)
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, s),
        settings.grpc_default_deadline_s,
    )
    http = HttpServer(PassKitWebService(passes).app, settings.passkit_host, settings.passkit_port)
    await http.start()
    await serve_until_shutdown(server, [], [http.stop, client.close])
