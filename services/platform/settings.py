"""Typed settings read once from ``LODESTAR_*`` environment variables.

Every service and the gateway load their settings through :func:`load_settings`; a missing or
bad value stops start-up with a message naming the variable, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.platform.crypto import FieldCipher, cipher_from_settings

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class CommonSettings(BaseSettings):
    """What every process needs: logging, Kafka and metrics."""

    model_config = SettingsConfigDict(env_prefix="LODESTAR_", extra="ignore", frozen=True)

    log_level: LogLevel = "INFO"
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    # Off by default: the local broker rejects idempotent producers; turn on for Apache Kafka.
    kafka_idempotent_producer: bool = False
    # Tansu joins a group in about session_timeout / 2: local runs set ~2 s.
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000, le=300_000)
    kafka_topic_partitions: int = Field(6, ge=1, le=1_000)
    kafka_replication_factor: int = Field(1, ge=1, le=10)
    kafka_max_batch: int = Field(500, ge=1, le=10_000)
    # How long the broker may hold a fetch open waiting for data: the latency floor per hop.
    kafka_fetch_max_wait_ms: int = Field(50, ge=0, le=5_000)
    kafka_handler_retries: int = Field(3, ge=0, le=100)
    kafka_retry_backoff_ms: int = Field(200, ge=0, le=60_000)
    # 0 turns the Prometheus endpoint off.
    metrics_port: int = Field(9100, ge=0, le=65_535)
    # Every door binds to loopback unless opened on purpose (Kubernetes sets 0.0.0.0).
    metrics_host: str = Field("127.0.0.1", min_length=1)
    # Prometheus scrapes with `Authorization: Bearer <token>`; required when the metrics
    # endpoint listens beyond loopback.
    metrics_token: SecretStr | None = Field(None, min_length=16)
    # The services' gRPC door: servers refuse calls without it, clients send it. Required
    # when gRPC listens beyond loopback; `make run` makes a fresh one.
    grpc_token: SecretStr | None = Field(None, min_length=16)
    # Where spans go: none (off), console (one JSON line per span on stdout) or otlp (the
    # OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT collector, over HTTP).
    tracing_exporter: Literal["none", "console", "otlp"] = "none"

    def grpc_token_value(self) -> str | None:
        """The service token, if one is configured."""
        return None if self.grpc_token is None else self.grpc_token.get_secret_value()

    def metrics_token_value(self) -> str | None:
        """The metrics token, if one is configured."""
        return None if self.metrics_token is None else self.metrics_token.get_secret_value()

    @model_validator(mode="after")
    def open_metrics_are_locked(self) -> Self:
        """A metrics endpoint reachable from other machines needs the metrics token."""
        if self.metrics_token is None and self.metrics_host not in LOOPBACK_HOSTS:
            raise ValueError(
                "LODESTAR_METRICS_TOKEN is required when LODESTAR_METRICS_HOST is not loopback"
            )
        return self


class ServiceSettings(CommonSettings):
    """A gRPC service that owns MongoDB collections. Subclasses set the port default."""

    mongo_uri: str = Field("mongodb://127.0.0.1:27017", pattern=r"^mongodb(\+srv)?://")
    # Databases are named <prefix>_<service>.
    mongo_database_prefix: str = Field("lodestar", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    # Loopback unless opened on purpose (Kubernetes sets 0.0.0.0; NetworkPolicies guard it).
    grpc_host: str = Field("127.0.0.1", min_length=1)
    grpc_port: int = Field(0, ge=0, le=65_535)
    # Applied to calls that arrive without a deadline.
    grpc_default_deadline_s: float = Field(10.0, gt=0, le=300)

    @model_validator(mode="after")
    def open_doors_are_locked(self) -> Self:
        """A gRPC port reachable from other machines needs the service token."""
        if self.grpc_token is None and self.grpc_host not in LOOPBACK_HOSTS:
            raise ValueError(
                "LODESTAR_GRPC_TOKEN is required when LODESTAR_GRPC_HOST is not loopback"
            )
        return self


class PiiSettings(ServiceSettings):
    """A service that keeps PII: e-mail, phone (and more) are stored encrypted and looked up
    by a keyed blind index. See the README's key-rotation procedure."""

    # "k1:BASE64,k2:BASE64": every key a stored value may use; new writes use the active one.
    pii_keys: SecretStr
    pii_active_key_id: str = Field(min_length=1)
    # HMAC key of the blind indexes; distinct from the encryption keys.
    pii_index_key: SecretStr

    @model_validator(mode="after")
    def keys_are_usable(self) -> Self:
        """Fail at start-up, not at the first event, when the key material is wrong."""
        self.field_cipher()
        return self

    def field_cipher(self) -> FieldCipher:
        """The cipher built from the configured keys."""
        return cipher_from_settings(
            self.pii_keys.get_secret_value(),
            self.pii_active_key_id,
            self.pii_index_key.get_secret_value(),
        )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable a pydantic error location stands for."""
    head = str(loc[0]) if loc else "?"
    return head if head.startswith("LODESTAR_") else f"LODESTAR_{head.upper()}"


def describe_errors(error: ValidationError) -> str:
    """One line per bad variable, naming it and saying what is wrong."""
    lines = []
    for item in error.errors():
        problem = "is required but not set" if item["type"] == "missing" else item["msg"]
        if item["loc"]:
            lines.append(f"{env_name(tuple(item['loc']))}: {problem}")
        else:
            # A rule across several variables; its message names them.
            lines.append(problem.removeprefix("Value error, "))
    return "\n".join(lines)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Read ``cls`` from the environment or exit with status 2 naming each bad variable."""
    try:
        return cls()
    except ValidationError as error:
        print(f"invalid configuration:\n{describe_errors(error)}", file=sys.stderr)
        raise SystemExit(2) from None
