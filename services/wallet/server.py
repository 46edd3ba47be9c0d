"""Wiring of the wallet service: settings -> store and clients (APNs, Google Wallet, identity
and profile) -> passes (Apple signing, Google Wallet, identity linking) -> live updates, the
push dispatcher, the consumers, the gRPC servicer and the PassKit web service (HTTP) in one
process. The domain modules get the store and the clients here, through their Protocols."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lodestar.v1 import (
    events_pb2,
    identity_pb2_grpc,
    profile_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Subscription
from services.platform.health import service_health
from services.platform.mongo import database, mongo_client
from services.platform.privacy import PrivacyHandler
from services.platform.rpc import GrpcServer, client_channel
from services.platform.runtime import serve_until_shutdown
from services.wallet.api import WalletServicer
from services.wallet.clients.apns import ApnsClient, ApnsCredentials
from services.wallet.clients.customers import IdentityLinker, ProfileFigures
from services.wallet.clients.google import GoogleWalletClient, ServiceAccount
from services.wallet.consumers import (
    MembershipHandler,
    ProfileChangedHandler,
    ResolvedEventHandler,
    merge_handler,
)
from services.wallet.delivery import Dispatcher
from services.wallet.downloads import DownloadLinks
from services.wallet.feedback import WalletFeedback
from services.wallet.googlepasses import GooglePasses
from services.wallet.http import HttpServer
from services.wallet.live import LiveUpdates
from services.wallet.passes import WalletPasses
from services.wallet.settings import WalletSettings
from services.wallet.store import WalletStore
from services.wallet.webservice import PassDownloads, PassKitWebService

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name
log = logging.getLogger(__name__)


def apns_client(
    settings: WalletSettings, team_id: str, on_outcome: Callable[[bool], None] | None = None
) -> ApnsClient | None:
    """The APNs client the settings describe, or None when no auth key is configured;
    ``on_outcome`` hears whether APNs answered each push."""
    if settings.wallet_apns_auth_key is None:
        log.warning("no APNs auth key configured: pass updates are not pushed")
        return None
    credentials = ApnsCredentials.from_file(
        settings.wallet_apns_auth_key,
        settings.wallet_apns_team_id or team_id,
        settings.wallet_apns_key_id,
    )
    return ApnsClient(
        settings.wallet_apns_url,
        credentials,
        ca_file=settings.wallet_apns_ca_file,
        on_outcome=on_outcome,
    )


def google_client(
    settings: WalletSettings, on_outcome: Callable[[bool], None] | None = None
) -> GoogleWalletClient | None:
    """The Google Wallet client the settings describe, or None without a service account;
    ``on_outcome`` hears whether Google answered each call."""
    if settings.wallet_google_service_account is None:
        log.warning("no Google service account configured: GOOGLE passes are refused")
        return None
    return GoogleWalletClient(
        settings.wallet_google_api_url,
        settings.wallet_google_token_uri,
        settings.wallet_google_issuer_id,
        ServiceAccount.from_file(settings.wallet_google_service_account),
        save_url_base=settings.wallet_google_save_url,
        on_outcome=on_outcome,
    )


async def serve(settings: WalletSettings) -> None:
    """Run gRPC, the PassKit web service, the consumers, the push dispatcher and the ticket
    reminders until SIGTERM."""
    client = mongo_client(settings.mongo_uri, "lodestar-wallet")
    store = WalletStore(database(client, settings.mongo_database_prefix, "wallet"))
    await store.ensure_indexes()
    signer = settings.pass_signer()
    bus = Bus(BusConfig.from_settings(settings, "wallet"))
    await bus.start()
    identity = client_channel(settings.identity_addr, token=settings.grpc_token_value())
    profile = client_channel(settings.profile_addr, token=settings.grpc_token_value())
    health, close_health = service_health(settings.mongo_uri, bus, optional=["apns", "google"])
    google_api = google_client(settings, health.reporter("google"))
    google = (
        GooglePasses(google_api, settings.wallet_google_issuer_id, settings.wallet_web_service_url)
        if google_api
        else None
    )
    passes = WalletPasses(
        store,
        signer,
        settings.wallet_web_service_url,
        push_delay_s=settings.wallet_push_delay_ms / 1000,
        google=google,
        linker=IdentityLinker(identity_pb2_grpc.IdentityServiceStub(identity)),
        figures=ProfileFigures(profile_pb2_grpc.ProfileServiceStub(profile)),
    )
    feedback = WalletFeedback(bus)
    apns = apns_client(settings, signer.team_id, health.reporter("apns"))
    dispatcher = Dispatcher(store, apns, google, removed=feedback.removed, pushed=feedback.pushed)
    passes.on_push_scheduled(dispatcher.schedule)
    live = LiveUpdates(passes, store, settings.live_policy(), flush=dispatcher.flush)
    links = DownloadLinks(
        settings.download_link_secret(),
        settings.wallet_web_service_url,
        settings.wallet_download_link_ttl_s,
    )
    servicer = WalletServicer(passes, live, links)
    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [SERVICE_NAME],
        lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, s),
        settings.grpc_default_deadline_s,
        token=settings.grpc_token_value(),
    )
    health.report_to(server)
    subscriptions: list[Subscription[Any]] = [
        bus.subscribe(
            [topics.PROFILE_CHANGED],
            "wallet-profiles",
            events_pb2.ProfileChanged,
            ProfileChangedHandler(live),
        ),
        bus.subscribe(
            [topics.SEGMENTS_MEMBERSHIP],
            "wallet-segments",
            events_pb2.SegmentMembershipChanged,
            MembershipHandler(live),
        ),
        bus.subscribe(
            [topics.EVENTS_RESOLVED], "wallet-events", events_pb2.Event, ResolvedEventHandler(live)
        ),
        bus.subscribe(
            [topics.IDENTITY_MERGED],
            "wallet-merges",
            events_pb2.IdentityMerged,
            merge_handler(live),
        ),
        bus.subscribe(
            [topics.PRIVACY],
            "wallet-privacy",
            events_pb2.PrivacyRequest,
            PrivacyHandler("wallet", bus, erase=live.erase, export=live.export),
        ),
    ]
    http = HttpServer(
        PassKitWebService(passes, feedback, PassDownloads(passes, links), health).app,
        settings.passkit_host,
        settings.passkit_port,
    )
    await http.start()
    closers: list[Callable[[], Awaitable[object] | None]] = [
        http.stop,
        bus.stop,
        identity.close,
        profile.close,
    ]
    if apns is not None:
        closers.append(apns.aclose)
    if google_api is not None:
        closers.append(google_api.aclose)
    await serve_until_shutdown(
        server,
        subscriptions,
        [*closers, client.close, close_health],
        periodic=[(settings.wallet_reminder_interval_s, live.reminders)],
        background=[("push-dispatcher", dispatcher.run), ("dependency-health", health.run)],
    )
