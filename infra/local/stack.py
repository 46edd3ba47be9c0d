"""The local platform: the two wire-protocol servers, the five services and the gateway, each
its own process, plus the loopback stand-ins for Apple's push service (APNs) and the Google
Wallet API when no real credentials are configured. ``python -m infra.local`` runs it for
people; the e2e fixtures run the same code on free ports.

The stack supervises what it started (infra/local/supervisor.py): a service, a replica, the
gateway or a stand-in that dies is restarted with backoff; a MongoDB-wire server with file
storage too; an in-memory server is not (its data is gone), the stack reports it as failed.
Every child dies with the process that owns the stack (infra/local/servers.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import signal
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.keys import split_key
from gateway.keys_settings import KeyStoreSettings
from gateway.keys_store import api_keys_from
from gateway.scopes import ALL_SCOPES, Scope
from infra.local.devapns import ensure_apns_dev_files
from infra.local.fake_google import DEV_ISSUER_ID, ensure_google_dev_service_account
from infra.local.observe import Observer, Probe
from infra.local.servers import (
    KafkaWireServer,
    LocalServer,
    ManagedProcess,
    MongoWireServer,
    free_port,
    port_in_use,
    wait_until,
)
from infra.local.supervisor import Child, ProcessStatus, RestartPolicy, State, Supervisor
from services.platform import topics
from services.platform.bus import ensure_topics
from services.platform.crypto import generate_key
from services.platform.rpc import client_channel
from services.wallet.devcerts import ensure_dev_certificates

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "profile", "segmentation", "recommendation", "wallet")
# LODESTAR_LOCAL_REPLICAS: processes per service, all in the service's consumer groups.
MAX_REPLICAS = 8
# Signals after which the process is gone (SIGSTOP/SIGCONT leave it in place).
ENDING_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
log = logging.getLogger(__name__)
DEFAULT_GRPC_PORTS = {
    "identity": 50051,
    "profile": 50052,
    "segmentation": 50053,
    "recommendation": 50054,
    "wallet": 50055,
}
DEFAULT_METRICS_PORTS = {name: 9101 + i for i, name in enumerate(SERVICES)}
# The local wallet signs with throwaway certificates made for this pass type (not Apple's).
DEV_PASS_TYPE_ID = "pass.com.example.lodestar.dev"  # noqa: S105 (an identifier, not a secret)
DEV_TEAM_ID = "LODESTARDEV"
DEV_APNS_KEY_ID = "LODESTARK1"
# Loopback stand-ins for APNs and Google Wallet (infra/local/fake_apns.py, fake_google.py).
STAND_INS = ("fake-apns", "fake-google")
# The key ring every PII-keeping process of a run shares (written to Stack.pii_env_file).
PII_VARIABLES = ("LODESTAR_PII_KEYS", "LODESTAR_PII_ACTIVE_KEY_ID", "LODESTAR_PII_INDEX_KEY")
# Every process that owns a database (``<prefix>_<name>``): the services and the gateway's keys.
DATABASE_OWNERS = (*SERVICES, "gateway")
DEFAULT_MONGO_PORTS = {name: 27018 + i for i, name in enumerate(DATABASE_OWNERS)}
# LODESTAR_LOCAL_MONGO_SERVERS: one MongoDB-wire server for every database, or one per owner.
MONGO_MODES = ("shared", "per-service")
# Shared: on 2 cores, six servers ran the end-to-end bench at 0.4-0.9x of one (bench_ingest).
DEFAULT_MONGO_MODE = "shared"


@dataclass
class StackPorts:
    """Every port of the local platform."""

    mongo: int = 27017
    kafka: int = 9092
    gateway: int = 8000
    # The wallet's PassKit web service (HTTP).
    passkit: int = 8080
    # The loopback APNs (HTTPS, HTTP/2) and Google Wallet API stand-ins.
    apns: int = 8443
    google: int = 8090
    grpc: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GRPC_PORTS))
    metrics: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_METRICS_PORTS))
    # One MongoDB-wire server per database owner (LODESTAR_LOCAL_MONGO_SERVERS=per-service).
    mongo_per_service: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MONGO_PORTS))
    # The PassKit HTTP port of each further wallet replica (``wallet-2`` ...), like the
    # further replicas' entries in ``grpc`` and ``metrics``: free ports chosen by the Stack.
    replica_passkit: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackPorts:
        """The defaults (the README's "What runs where"), each overridable by its variable."""

        def port(var: str, default: int) -> int:
            raw = env.get(var, "")
            if not raw:
                return default
            if not raw.isdigit() or not 0 < int(raw) < 65_536:
                raise SystemExit(f"{var}: must be a port number, got {raw!r}")
            return int(raw)

        return cls(
            mongo=port("LODESTAR_MONGO_PORT", 27017),
            kafka=port("LODESTAR_KAFKA_PORT", 9092),
            gateway=port("LODESTAR_GATEWAY_HTTP_PORT", 8000),
            passkit=port("LODESTAR_WALLET_HTTP_PORT", 8080),
            apns=port("LODESTAR_APNS_STAND_IN_PORT", 8443),
            google=port("LODESTAR_GOOGLE_STAND_IN_PORT", 8090),
            grpc={
                s: port(f"LODESTAR_{s.upper()}_GRPC_PORT", p) for s, p in DEFAULT_GRPC_PORTS.items()
            },
            metrics={
                s: port(f"LODESTAR_{s.upper()}_METRICS_PORT", p)
                for s, p in DEFAULT_METRICS_PORTS.items()
            },
            mongo_per_service={
                s: port(f"LODESTAR_{s.upper()}_MONGO_PORT", p)
                for s, p in DEFAULT_MONGO_PORTS.items()
            },
        )

    @classmethod
    def free(cls) -> StackPorts:
        """Free ports for everything (tests)."""
        return cls(
            mongo=free_port(),
            kafka=free_port(),
            gateway=free_port(),
            passkit=free_port(),
            apns=free_port(),
            google=free_port(),
            grpc={s: free_port() for s in SERVICES},
            metrics={s: free_port() for s in SERVICES},
            mongo_per_service={s: free_port() for s in DATABASE_OWNERS},
        )


def grpc_serving(target: str, timeout_s: float = 0.5) -> bool:
    """True when the gRPC server at ``target`` reports SERVING."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str, verify: str | bool = True) -> bool:
    """True when ``url`` answers 200 (``verify``: a CA file for the loopback TLS stand-in)."""
    trust = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    try:
        return httpx.get(url, timeout=0.5, verify=trust).status_code == 200
    except httpx.HTTPError:
        return False


def service_of(name: str) -> str:
    """The service a process runs: ``profile`` for ``profile`` and for ``profile-2``."""
    base, _, number = name.rpartition("-")
    return base if number.isdigit() and base in SERVICES else name


def replicas_from(env: Mapping[str, str]) -> dict[str, int]:
    """``LODESTAR_LOCAL_REPLICAS``: one number for every service (``2``), or per service
    (``profile=2,wallet=3``); unset means one each."""
    raw = env.get("LODESTAR_LOCAL_REPLICAS", "").strip()
    counts = dict.fromkeys(SERVICES, 1)
    if not raw:
        return counts
    problem = (
        f"LODESTAR_LOCAL_REPLICAS: must be a number 1-{MAX_REPLICAS} or service=number pairs "
        f"({', '.join(SERVICES)}), got {raw[:40]!r}"
    )
    pairs = (
        [[service, raw] for service in SERVICES]
        if raw.isdigit()
        else [part.strip().split("=", 1) for part in raw.split(",")]
    )
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in SERVICES or not pair[1].isdigit():
            raise SystemExit(problem)
        if not 1 <= int(pair[1]) <= MAX_REPLICAS:
            raise SystemExit(problem)
        counts[pair[0]] = int(pair[1])
    return counts


def mongo_mode_from(env: Mapping[str, str]) -> str:
    """``LODESTAR_LOCAL_MONGO_SERVERS``: ``shared`` (one server) or ``per-service``."""
    mode = env.get("LODESTAR_LOCAL_MONGO_SERVERS", "") or DEFAULT_MONGO_MODE
    if mode not in MONGO_MODES:
        raise SystemExit(
            f"LODESTAR_LOCAL_MONGO_SERVERS: must be one of {', '.join(MONGO_MODES)}, "
            f"got {mode[:40]!r}"
        )
    return mode


class Stack:
    """The whole platform on one machine.

    ``mongo_uri`` / ``kafka_bootstrap`` may point at servers started elsewhere (the test
    session shares one of each); otherwise :meth:`start` launches them on ``ports``: one
    MongoDB-wire server, or one per database owner when ``mongo_mode`` (default: the
    ``LODESTAR_LOCAL_MONGO_SERVERS`` setting) is ``per-service``. ``mongo_standalone=False``
    starts them advertised as a replica set (only to compare, in benchmarks);
    ``mongo_storage_dir`` keeps their data in files there (so a restarted server has it).

    ``replicas`` (default: ``LODESTAR_LOCAL_REPLICAS``) runs N processes of a service, named
    ``profile``, ``profile-2`` ...; all join the service's consumer groups, each has its own
    gRPC, metrics (and PassKit) ports, and the gateway and the wallet call the first one.
    ``partitions`` sets ``LODESTAR_KAFKA_TOPIC_PARTITIONS`` (topics this stack creates).
    Once started, the stack supervises its children (``supervise=False``: not at all).
    """

    def __init__(
        self,
        ports: StackPorts,
        log_dir: Path,
        *,
        write_key: str | None = None,
        mongo_uri: str | None = None,
        kafka_bootstrap: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        wallet_certs_dir: Path | None = None,
        mongo_mode: str | None = None,
        mongo_standalone: bool = True,
        mongo_storage_dir: Path | None = None,
        replicas: Mapping[str, int] | None = None,
        partitions: int | None = None,
        supervise: bool = True,
        restart_policy: RestartPolicy | None = None,
    ) -> None:
        self.ports = ports
        self.log_dir = log_dir
        self.write_key = write_key or f"wk_{secrets.token_urlsafe(18)}"
        # The dev key with every scope, created in the gateway's database by start().
        self.api_key = ""
        self.extra_env = dict(extra_env or {})
        if partitions is not None:
            if partitions < 1:
                raise ValueError("partitions must be at least 1")
            self.extra_env["LODESTAR_KAFKA_TOPIC_PARTITIONS"] = str(partitions)
        self.mongo_storage_dir = mongo_storage_dir
        self.supervisor: Supervisor | None = Supervisor(restart_policy) if supervise else None
        self.wallet_certs_dir = wallet_certs_dir or ROOT / ".local" / "wallet-certs"
        # Fresh PII keys per local run (the local database is in memory too).
        # The services' gRPC door: every process of this run shares one fresh token.
        self.grpc_token = os.environ.get("LODESTAR_GRPC_TOKEN") or secrets.token_urlsafe(24)
        self.pii_env = {
            "LODESTAR_PII_KEYS": f"local1:{generate_key()}",
            "LODESTAR_PII_ACTIVE_KEY_ID": "local1",
            "LODESTAR_PII_INDEX_KEY": generate_key(),
        }
        self.mongo: MongoWireServer | None = None
        # Per-service mode: each database owner's own server, by owner name.
        self.mongo_servers: dict[str, MongoWireServer] = {}
        self.mongo_standalone = mongo_standalone
        self.kafka: KafkaWireServer | None = None
        self.mongo_uri = mongo_uri or ""
        self.kafka_bootstrap = kafka_bootstrap or ""
        self.processes: dict[str, ManagedProcess] = {}
        # Health, lag and last errors for the status, once observe() started it.
        self.observer: Observer | None = None
        # The size of each log before this run (logs are appended to): older errors are not
        # this run's.
        self.log_offsets: dict[str, int] = {}
        env = self._base_env()
        # A server given from outside is one shared server.
        self.mongo_mode = "shared" if mongo_uri else (mongo_mode or mongo_mode_from(env))
        if self.mongo_mode not in MONGO_MODES:
            raise ValueError(f"mongo_mode must be one of {', '.join(MONGO_MODES)}")
        # Stand-ins run unless real credentials are configured.
        self.stand_ins = tuple(
            name
            for name, real in (
                ("fake-apns", "LODESTAR_WALLET_APNS_AUTH_KEY"),
                ("fake-google", "LODESTAR_WALLET_GOOGLE_SERVICE_ACCOUNT"),
            )
            if real not in env
        )
        self.replicas = replicas_from(env)
        for service, count in (replicas or {}).items():
            if service not in SERVICES or not 1 <= count <= MAX_REPLICAS:
                raise ValueError(f"replicas: 1-{MAX_REPLICAS} of one of {', '.join(SERVICES)}")
            self.replicas[service] = count
        for name in self.replica_names():
            self.ports.grpc.setdefault(name, free_port())
            self.ports.metrics.setdefault(name, free_port())
            if service_of(name) == "wallet":
                self.ports.replica_passkit.setdefault(name, free_port())
        self.apns_files = ensure_apns_dev_files(
            self.wallet_certs_dir / "apns", DEV_TEAM_ID, DEV_APNS_KEY_ID
        )
        self.google_key = ensure_google_dev_service_account(
            self.wallet_certs_dir / "google", self.google_token_uri
        )

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway."""
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def passkit_url(self) -> str:
        """Base URL of the wallet's PassKit web service (the passes' webServiceURL)."""
        return f"http://127.0.0.1:{self.ports.passkit}"

    @property
    def apns_url(self) -> str:
        """Base URL of the loopback APNs stand-in (HTTPS with the dev CA)."""
        return f"https://127.0.0.1:{self.ports.apns}"

    @property
    def apns_ca(self) -> str:
        """The dev CA file that makes the APNs stand-in's certificate trusted."""
        return str(self.apns_files.ca_certificate)

    @property
    def google_url(self) -> str:
        """Base URL of the loopback Google Wallet stand-in."""
        return f"http://127.0.0.1:{self.ports.google}"

    @property
    def google_token_uri(self) -> str:
        """The stand-in's OAuth token endpoint."""
        return f"{self.google_url}/token"

    def mongo_uri_for(self, owner: str) -> str:
        """The MongoDB URI of the server holding ``owner``'s database (a service or
        ``gateway``): its own server in per-service mode, else the shared one."""
        if owner not in DATABASE_OWNERS:
            raise ValueError(f"no database owner named {owner[:40]!r}")
        server = self.mongo_servers.get(owner)
        return server.uri if server is not None else self.mongo_uri

    def mongo_processes(self) -> dict[str, MongoWireServer]:
        """Every MongoDB-wire server this stack started, by name (``mongodb`` when shared,
        ``mongodb-<owner>`` per service)."""
        if self.mongo is not None:
            return {"mongodb": self.mongo}
        return {f"mongodb-{owner}": server for owner, server in self.mongo_servers.items()}

    def service_processes(self) -> list[str]:
        """Every service process by name: each service, then its further replicas."""
        return [*SERVICES, *self.replica_names()]

    def replica_names(self) -> list[str]:
        """The further replicas (``profile-2`` ...), beyond each service's first process."""
        return [
            f"{service}-{n}" for service in SERVICES for n in range(2, self.replicas[service] + 1)
        ]

    def servers(self) -> dict[str, LocalServer]:
        """Every wire-protocol server this stack started, by name (``mongodb`` or
        ``mongodb-<owner>``, and ``kafka``)."""
        found: dict[str, LocalServer] = dict(self.mongo_processes())
        if self.kafka is not None:
            found["kafka"] = self.kafka
        return found

    def grpc_channel(self, service: str) -> grpc.aio.Channel:
        """An asyncio channel to a service that sends this run's service token."""
        return client_channel(self.grpc_target(service), 30.0, self.grpc_token)

    def grpc_target(self, service: str) -> str:
        """``host:port`` of a service's gRPC server."""
        return f"127.0.0.1:{self.ports.grpc[service]}"

    def start(self, timeout_s: float = 90.0) -> None:
        """Bring everything up and wait until every health check passes."""
        self._check_ports_free()
        if self.log_dir.is_dir():
            self.log_offsets = {p.name: p.stat().st_size for p in self.log_dir.glob("*.log")}
        if self.mongo_mode == "per-service":
            for owner in DATABASE_OWNERS:
                server = MongoWireServer(
                    self.ports.mongo_per_service[owner],
                    self.log_dir,
                    self._mongo_storage(owner),
                    standalone=self.mongo_standalone,
                    label=owner,
                )
                self.mongo_servers[owner] = server
                server.start()
        elif not self.mongo_uri:
            self.mongo = MongoWireServer(
                self.ports.mongo,
                self.log_dir,
                self._mongo_storage("mongodb"),
                standalone=self.mongo_standalone,
            )
            self.mongo.start()
            self.mongo_uri = self.mongo.uri
        if not self.kafka_bootstrap:
            self.kafka = KafkaWireServer(self.ports.kafka, self.log_dir)
            self.kafka.start()
            self.kafka_bootstrap = self.kafka.bootstrap_servers
        partitions = int(self._base_env().get("LODESTAR_KAFKA_TOPIC_PARTITIONS", "6"))
        asyncio.run(
            ensure_topics(
                self.kafka_bootstrap,
                dict.fromkeys(topics.ALL_TOPICS, partitions),
                retention_ms=dict.fromkeys(topics.EVENT_TOPICS, self._events_retention_ms()),
            )
        )
        self.write_pii_env()
        for name in self.stand_ins:
            self.start_process(name)
        for name in self.stand_ins:
            self.wait_healthy(name, timeout_s)
        self.api_key = asyncio.run(self.create_api_key(ALL_SCOPES, "make run dev key"))
        for name in (*self.service_processes(), "gateway"):
            self.start_process(name)
        for name in (*self.service_processes(), "gateway"):
            self.wait_healthy(name, timeout_s)
        self.supervise()

    @property
    def pii_env_file(self) -> Path:
        """Where :meth:`start` writes this run's PII keys (``.local/logs/pii.env`` under
        ``make run``), so ``services.rotate_keys`` can be pointed at the running stack."""
        return self.log_dir / "pii.env"

    def write_pii_env(self) -> None:
        """The ``LODESTAR_PII_*`` keys every process of this run got (and, with one shared
        MongoDB-wire server, its URI) as shell assignments, readable by the owner only."""
        env = self._base_env()
        names = [name for name in PII_VARIABLES if name in env]
        if self.mongo_mode == "shared":
            names.append("LODESTAR_MONGO_URI")
        lines = [
            "# The PII keys of this local run (throwaway, like its in-memory data).",
            "# Use: set -a; . <this file>; set +a",
            *(f"{name}={shlex.quote(env[name])}" for name in names),
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pii_env_file.unlink(missing_ok=True)
        descriptor = os.open(self.pii_env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    def _mongo_storage(self, name: str) -> str:
        """In memory, or a directory per server under ``mongo_storage_dir``."""
        if self.mongo_storage_dir is None:
            return ":memory:"
        return str(self.mongo_storage_dir / name)

    def supervise(self) -> None:
        """Watch every child started so far and the servers (:meth:`start` calls it once all
        are healthy: a failure during start-up stops the start instead)."""
        if self.supervisor is None:
            return
        for name in (*self.stand_ins, *self.service_processes(), "gateway"):
            if name in self.processes:
                self.supervisor.add(self._child(name))
        for name, server in self.servers().items():
            self.supervisor.add(self.server_child(name, server))
        self.supervisor.start()

    @staticmethod
    def server_child(name: str, server: LocalServer) -> Child:
        """A server is restarted (on its port) only when its data survives a restart."""
        durable = isinstance(server, MongoWireServer) and server.storage_path != ":memory:"
        return Child(
            name=name,
            kind="server",
            process=lambda: server.process,
            launch=server.start,
            healthy=server.ready,
            restartable=durable,
            fatal_note=(
                "it kept its data in memory, so that data is gone: not restarted "
                "(stop the stack and start it again)"
            ),
        )

    def _child(self, name: str) -> Child:
        """How the supervisor finds, starts and checks one process of this stack."""
        return Child(
            name=name,
            kind="stand-in" if name in STAND_INS else "service",
            process=lambda: self.processes.get(name),
            launch=lambda: self.start_process(name),
            healthy=lambda: self._healthy(name),
        )

    def _key_settings(self) -> KeyStoreSettings:
        """Where the gateway of this stack keeps its API keys."""
        prefix = self._base_env().get("LODESTAR_MONGO_DATABASE_PREFIX", "lodestar")
        return KeyStoreSettings(
            mongo_uri=self.mongo_uri_for("gateway"), mongo_database_prefix=prefix
        )

    async def create_api_key(self, scopes: Iterable[Scope], name: str = "test key") -> str:
        """A new GraphQL API key with ``scopes``, stored in the gateway's database (the one
        ``python -m gateway keys create`` uses); the key itself is returned, never stored."""
        keys, client = api_keys_from(self._key_settings())
        try:
            key, _ = await keys.create(name, scopes)
        finally:
            client.close()
        return key

    async def revoke_api_key(self, key: str) -> None:
        """Revoke a key made by :meth:`create_api_key` (the gateway stops taking it within
        ``LODESTAR_GRAPHQL_KEY_CACHE_TTL_S``)."""
        parts = split_key(key)
        if parts is None:
            raise ValueError("not an API key")
        keys, client = api_keys_from(self._key_settings())
        try:
            await keys.revoke(parts[0])
        finally:
            client.close()

    def _events_retention_ms(self) -> int:
        """How long the event topics keep events (and their PII)."""
        raw = self._base_env().get("LODESTAR_KAFKA_EVENTS_RETENTION_HOURS", "168")
        if not raw.isdigit() or int(raw) < 1:
            raise SystemExit(
                f"LODESTAR_KAFKA_EVENTS_RETENTION_HOURS: must be hours >= 1, got {raw!r}"
            )
        return int(raw) * 3600 * 1000

    def _check_ports_free(self) -> None:
        wanted = {
            "LODESTAR_GATEWAY_HTTP_PORT": self.ports.gateway,
            "LODESTAR_WALLET_HTTP_PORT": self.ports.passkit,
            **{
                f"LODESTAR_{name.split('-')[1].upper()}_STAND_IN_PORT": port
                for name, port in (
                    ("fake-apns", self.ports.apns),
                    ("fake-google", self.ports.google),
                )
                if name in self.stand_ins
            },
            **{f"LODESTAR_{s.upper()}_GRPC_PORT": p for s, p in self.ports.grpc.items()},
        }
        if self.mongo_mode == "per-service":
            wanted.update(
                {
                    f"LODESTAR_{owner.upper()}_MONGO_PORT": self.ports.mongo_per_service[owner]
                    for owner in DATABASE_OWNERS
                }
            )
        elif not self.mongo_uri:
            wanted["LODESTAR_MONGO_PORT"] = self.ports.mongo
        if not self.kafka_bootstrap:
            wanted["LODESTAR_KAFKA_PORT"] = self.ports.kafka
        busy = [f"{var}={port}" for var, port in wanted.items() if port_in_use(port)]
        if busy:
            raise SystemExit(
                "ports already in use: " + ", ".join(busy) + " (set the variables to move them)"
            )

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LODESTAR_")}
        env.update(
            {
                "LODESTAR_MONGO_URI": self.mongo_uri,
                "LODESTAR_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
                # Tansu joins a consumer group in about session_timeout / 2.
                "LODESTAR_KAFKA_SESSION_TIMEOUT_MS": "2000",
                "LODESTAR_KAFKA_TOPIC_PARTITIONS": "6",
                "PYTHONUNBUFFERED": "1",
                "LODESTAR_GRPC_TOKEN": self.grpc_token,
                **self.pii_env,
            }
        )
        env.update({k: v for k, v in os.environ.items() if k.startswith("LODESTAR_")})
        env.update(self.extra_env)
        return env

    def env_for(self, name: str) -> dict[str, str]:
        """The environment of one process."""
        env = self._base_env()
        if name in STAND_INS:
            return env
        service = service_of(name)
        if service in self.mongo_servers:
            env["LODESTAR_MONGO_URI"] = self.mongo_servers[service].uri
        if name == "gateway":
            env["LODESTAR_GATEWAY_HTTP_PORT"] = str(self.ports.gateway)
            env["LODESTAR_WRITE_KEY"] = self.write_key
            env.setdefault("LODESTAR_GATEWAY_GRAPHIQL", "true")  # local runs are dev: GraphiQL page
            env["LODESTAR_IDENTITY_ADDR"] = self.grpc_target("identity")
            env["LODESTAR_PROFILE_ADDR"] = self.grpc_target("profile")
            env["LODESTAR_SEGMENTATION_ADDR"] = self.grpc_target("segmentation")
            env["LODESTAR_RECOMMENDATION_ADDR"] = self.grpc_target("recommendation")
            env["LODESTAR_WALLET_ADDR"] = self.grpc_target("wallet")
            env["LODESTAR_METRICS_PORT"] = "0"
        else:
            env[f"LODESTAR_{service.upper()}_GRPC_PORT"] = str(self.ports.grpc[name])
            env["LODESTAR_METRICS_PORT"] = str(self.ports.metrics[name])
        if service == "wallet":
            env.update(self._wallet_env(env, self.passkit_port(name)))
        return env

    def passkit_port(self, name: str = "wallet") -> int:
        """The PassKit HTTP port of a wallet process (``wallet`` or a further replica)."""
        return self.ports.replica_passkit.get(name, self.ports.passkit)

    def _wallet_env(self, env: Mapping[str, str], passkit_port: int) -> dict[str, str]:
        """The PassKit port and URL, and dev signing certificates (generated when missing)
        unless real ones are configured."""
        wallet = {
            "LODESTAR_WALLET_HTTP_PORT": str(passkit_port),
            "LODESTAR_WALLET_WEB_SERVICE_URL": env.get(
                "LODESTAR_WALLET_WEB_SERVICE_URL", self.passkit_url
            ),
        }
        if "LODESTAR_WALLET_APPLE_CERTIFICATE" not in env:
            files = ensure_dev_certificates(self.wallet_certs_dir, DEV_PASS_TYPE_ID, DEV_TEAM_ID)
            wallet["LODESTAR_WALLET_APPLE_CERTIFICATE"] = str(files.certificate)
            wallet["LODESTAR_WALLET_APPLE_KEY"] = str(files.key)
            wallet["LODESTAR_WALLET_APPLE_WWDR_CERTIFICATE"] = str(files.intermediate)
        wallet["LODESTAR_IDENTITY_ADDR"] = self.grpc_target("identity")
        wallet["LODESTAR_PROFILE_ADDR"] = self.grpc_target("profile")
        if "fake-apns" in self.stand_ins:
            wallet.update(
                {
                    "LODESTAR_WALLET_APNS_URL": self.apns_url,
                    "LODESTAR_WALLET_APNS_AUTH_KEY": str(self.apns_files.auth_key),
                    "LODESTAR_WALLET_APNS_KEY_ID": DEV_APNS_KEY_ID,
                    "LODESTAR_WALLET_APNS_TEAM_ID": DEV_TEAM_ID,
                    "LODESTAR_WALLET_APNS_CA_FILE": self.apns_ca,
                }
            )
        if "fake-google" in self.stand_ins:
            wallet.update(
                {
                    "LODESTAR_WALLET_GOOGLE_SERVICE_ACCOUNT": str(self.google_key),
                    "LODESTAR_WALLET_GOOGLE_ISSUER_ID": DEV_ISSUER_ID,
                    "LODESTAR_WALLET_GOOGLE_API_URL": f"{self.google_url}/walletobjects/v1",
                    "LODESTAR_WALLET_GOOGLE_TOKEN_URI": self.google_token_uri,
                    "LODESTAR_WALLET_GOOGLE_SAVE_URL": f"{self.google_url}/save/",
                }
            )
        return wallet

    def _stand_in_command(self, name: str) -> list[str]:
        if name == "fake-apns":
            files = self.apns_files
            return [
                sys.executable,
                "-m",
                "infra.local.fake_apns",
                "--port",
                str(self.ports.apns),
                "--cert",
                str(files.server_certificate),
                "--key",
                str(files.server_key),
                "--auth-key-public",
                str(files.auth_key_public),
                "--key-id",
                DEV_APNS_KEY_ID,
                "--team-id",
                DEV_TEAM_ID,
                "--topic",
                DEV_PASS_TYPE_ID,
                "--log",
                str(self.log_dir / "apns-pushes.jsonl"),
            ]
        return [
            sys.executable,
            "-m",
            "infra.local.fake_google",
            "--port",
            str(self.ports.google),
            "--service-account-key",
            str(self.google_key),
            "--issuer-id",
            DEV_ISSUER_ID,
            "--log",
            str(self.log_dir / "google-wallet-calls.jsonl"),
        ]

    def start_process(self, name: str) -> None:
        """Start (or restart) one service, replica, stand-in or the gateway."""
        module = "gateway" if name == "gateway" else f"services.{service_of(name)}"
        command = (
            self._stand_in_command(name) if name in STAND_INS else [sys.executable, "-m", module]
        )
        process = ManagedProcess(
            name,
            command,
            self.log_dir / f"{name}.log",
            self.env_for(name),
            cwd=ROOT,
        )
        process.start()
        self.processes[name] = process

    def wait_healthy(self, name: str, timeout_s: float = 60.0) -> None:
        """Wait for the gRPC health check (services) or ``/healthz`` (gateway; the wallet
        answers both)."""
        process = self.processes[name]

        def healthy() -> bool:
            if not process.alive:
                raise RuntimeError(f"{name} exited during start-up:\n{process.log_tail()}")
            return self._healthy(name)

        wait_until(healthy, timeout_s, name, 0.2)

    def _healthy(self, name: str) -> bool:
        """One health check of a process: gRPC health (services), ``/healthz`` (gateway;
        the wallet answers both), the stand-ins' own pages."""
        if name == "gateway":
            return http_ok(f"{self.gateway_url}/healthz")
        if name == "fake-apns":
            return http_ok(f"{self.apns_url}/fake/pushes", verify=self.apns_ca)
        if name == "fake-google":
            return http_ok(f"{self.google_url}/fake/health")
        passkit = f"http://127.0.0.1:{self.passkit_port(name)}/healthz"
        if service_of(name) == "wallet" and not http_ok(passkit):
            return False
        return grpc_serving(self.grpc_target(name))

    def _managed(self, name: str) -> ManagedProcess | None:
        """The current process of a child or server by name."""
        if name in self.processes:
            return self.processes[name]
        server = self.servers().get(name)
        if server is None:
            known = [*self.processes, *self.servers()]
            raise KeyError(f"no process named {name[:40]!r} (known: {', '.join(known)})")
        return server.process

    def send_signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to a process and return at once (``SIGSTOP`` freezes it, ``SIGCONT``
        thaws it; the supervisor sees a frozen process as running, as Kubernetes would until
        a probe fails)."""
        process = self._managed(name)
        if process is not None:
            process.signal(sig)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal one process (a service, replica, stand-in, the gateway, or a server:
        ``mongodb``, ``mongodb-<owner>``, ``kafka``) and wait for it to end (``SIGKILL``
        simulates a crash). Under supervision it is then restarted with backoff (see
        :meth:`wait_running`); a server only when its data survives (file storage)."""
        if sig not in ENDING_SIGNALS:
            self.send_signal(name, sig)
            return
        supervisor = self.supervisor
        if supervisor is None:
            process = self._managed(name)
            if process is not None and process.process is not None:
                process.signal(sig)
                process.process.wait(30)
                # Unsupervised: the caller starts it again (restart()).
                process.stop()
            return
        with supervisor.lock:
            process = self._managed(name)
            if process is None or process.process is None:
                return
            supervisor.expect_exit(name)
            process.signal(sig)
            process.process.wait(30)
            supervisor.poll(name)

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        """Stop a process if it runs (SIGTERM), start it again (a server on its port) and
        wait until it is healthy; under supervision, count it as a restart."""
        server = self.servers().get(name)
        supervisor = self.supervisor
        if supervisor is None:
            self._start_again(name, server, timeout_s)
        else:
            with supervisor.lock:
                self._start_again(name, server, timeout_s)
                supervisor.restarted(name)
        if server is None:
            self.wait_healthy(name, timeout_s)
        if supervisor is not None:
            self.wait_running(name, timeout_s)

    def _start_again(self, name: str, server: LocalServer | None, timeout_s: float) -> None:
        if server is not None:
            server.stop()
            server.start(timeout_s)
            return
        if name in self.processes and self.processes[name].alive:
            self.processes[name].stop()
        self.start_process(name)

    def wait_running(self, name: str, timeout_s: float = 60.0) -> None:
        """Wait until the supervisor has ``name`` running and healthy again (after a kill)."""
        supervisor = self.supervisor
        if supervisor is None:
            raise RuntimeError("this stack does not supervise its processes")

        def running() -> bool:
            state = supervisor.state(name)
            if state in (State.FAILED, State.STOPPED):
                raise RuntimeError(f"{name} is {state} and will not come back")
            return state is State.RUNNING

        wait_until(running, timeout_s, f"{name} running again", 0.1)

    def restarts(self, name: str) -> int:
        """How many times the supervisor (or :meth:`restart`) started ``name`` again."""
        return self.supervisor.restarts(name) if self.supervisor is not None else 0

    def status(self) -> list[ProcessStatus]:
        """Every child with its pid, state (running / restarting / backing off / stopped /
        failed), restart count, crash count and last exit; once :meth:`observe` runs, also
        its health, consumer lag and last error."""
        rows = self._states()
        if self.observer is None:
            return rows
        return [self._observed(row, self.observer) for row in rows]

    @staticmethod
    def _observed(row: ProcessStatus, observer: Observer) -> ProcessStatus:
        """``row`` with the observer's latest look (no health while the process is down)."""
        seen = observer.get(row.name)
        if seen is None:
            return row
        return replace(
            row,
            health=seen.health if row.pid is not None else "-",
            consumer_lag=seen.consumer_lag if row.pid is not None else None,
            last_error=seen.last_error,
        )

    def observe(self, interval_s: float = 2.0) -> None:
        """Start looking at every process in the background (health, consumer lag, last
        error; see infra/local/observe.py) for :meth:`status`; a second call does nothing."""
        if self.observer is None:
            token = self._base_env().get("LODESTAR_METRICS_TOKEN") or None
            self.observer = Observer(self.probes, token, interval_s)
            self.observer.start()

    def probes(self) -> list[Probe]:
        """How the observer looks at each process: its readiness, its metrics and its log."""
        found = []
        # A copy: the supervisor may start a process meanwhile.
        for name, process in list(self.processes.items()):
            metrics: str | None = None
            if name == "gateway":
                metrics = f"{self.gateway_url}/metrics"
            elif name in self.ports.metrics:
                metrics = f"http://127.0.0.1:{self.ports.metrics[name]}/metrics"
            found.append(self._probe(name, process, metrics))
        for name, server in self.servers().items():
            found.append(self._probe(name, server.process, None, server.ready))
        return found

    def _probe(
        self,
        name: str,
        process: ManagedProcess | None,
        metrics: str | None,
        ready: Callable[[], bool] | None = None,
    ) -> Probe:
        log_path = process.log_path if process is not None else None
        offset = self.log_offsets.get(log_path.name, 0) if log_path is not None else 0
        return Probe(name, ready or (lambda: self.ready(name)), metrics, log_path, offset)

    def ready(self, name: str) -> bool:
        """One readiness check: the gateway's ``/readyz`` (its dependencies too), else the
        process's health check."""
        if name == "gateway":
            return http_ok(f"{self.gateway_url}/readyz")
        return self._healthy(name)

    def _states(self) -> list[ProcessStatus]:
        """The supervisor's rows, or (unsupervised) alive or not."""
        if self.supervisor is not None and self.supervisor.status():
            return self.supervisor.status()
        rows = []
        servers = self.servers()
        for name in [*self.processes, *servers]:
            managed = self.processes.get(name) or servers[name].process
            alive = managed is not None and managed.alive
            rows.append(
                ProcessStatus(
                    name=name,
                    kind="server" if name in servers else "service",
                    pid=managed.pid if managed is not None and alive else None,
                    state=str(State.RUNNING if alive else State.STOPPED),
                    restarts=0,
                    crashes=0,
                    last_exit="",
                    next_start_in_s=0.0,
                )
            )
        return rows

    @property
    def failure(self) -> str | None:
        """What broke the stack beyond repair (an in-memory server died), else None."""
        return self.supervisor.failure if self.supervisor is not None else None

    def dead_processes(self) -> list[str]:
        """Names of processes that exited on their own: down now without being stopped, or
        (under supervision) crashed at least once even if restarted since."""
        down = [name for name, p in self.processes.items() if not p.alive and not p.stopped]
        crashed = self.supervisor.crashed() if self.supervisor is not None else []
        return sorted({*down, *crashed})

    def stop(self) -> None:
        """Stop supervising, then stop the gateway, the services, then the servers."""
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.observer is not None:
            self.observer.stop()
        replicas = self.replica_names()
        for name in ("gateway", *reversed(replicas), *reversed(SERVICES), *STAND_INS):
            if name in self.processes:
                self.processes[name].stop()
        for server in (self.kafka, self.mongo, *self.mongo_servers.values()):
            if server is not None:
                server.stop()
