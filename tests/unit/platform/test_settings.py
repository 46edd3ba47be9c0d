"""load_settings: typed ``LODESTAR_*`` settings, and a fail-fast exit naming the bad variable."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from services.identity.settings import IdentitySettings
from services.platform.bus import BusConfig
from services.platform.settings import ServiceSettings, load_settings
from services.profile.settings import ProfileSettings
from services.recommendation.settings import RecommendationSettings
from services.segmentation.settings import SegmentationSettings

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``LODESTAR_*`` variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("LODESTAR_"):
            monkeypatch.delenv(name)


def gateway_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_WRITE_KEY", "write-key-123")


@pytest.fixture(autouse=True)
def pii_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity service needs PII keys to start; give every test valid ones."""
    from tests.support.identity import key_env

    for name, value in key_env().items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("settings_type", "port"),
    [
        (IdentitySettings, 50051),
        (ProfileSettings, 50052),
        (SegmentationSettings, 50053),
        (RecommendationSettings, 50054),
    ],
)
def test_service_port_defaults(settings_type: type[ServiceSettings], port: int) -> None:
    settings = load_settings(settings_type)
    assert settings.grpc_port == port
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.mongo_uri == "mongodb://127.0.0.1:27017"
    assert settings.log_level == "INFO"


def test_gateway_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway_keys(monkeypatch)
    settings = load_settings(GatewaySettings)
    assert settings.http_port == 8000
    assert settings.identity_addr == "127.0.0.1:50051"
    assert settings.profile_addr == "127.0.0.1:50052"
    assert settings.max_event_bytes == 32 * 1024
    assert settings.max_batch_bytes == 500 * 1024


def test_profile_settings_read_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_PROFILE_GRPC_PORT", "6001")
    monkeypatch.setenv("LODESTAR_KAFKA_BOOTSTRAP_SERVERS", "kafka:29092")
    monkeypatch.setenv("LODESTAR_KAFKA_SESSION_TIMEOUT_MS", "2000")
    monkeypatch.setenv("LODESTAR_KAFKA_MAX_BATCH", "50")
    monkeypatch.setenv("LODESTAR_PROFILE_DEDUPE_WINDOW", "50")
    monkeypatch.setenv("LODESTAR_MONGO_URI", "mongodb+srv://cluster.example.com")
    monkeypatch.setenv("LODESTAR_LOG_LEVEL", "DEBUG")
    settings = load_settings(ProfileSettings)
    assert settings.grpc_port == 6001
    assert settings.kafka_bootstrap_servers == "kafka:29092"
    assert settings.kafka_session_timeout_ms == 2000
    assert settings.kafka_max_batch == 50
    assert settings.profile_dedupe_window == 50
    assert settings.mongo_uri == "mongodb+srv://cluster.example.com"
    assert settings.log_level == "DEBUG"


def test_service_port_variable_is_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    # The generic LODESTAR_GRPC_PORT is not how a service's port is set.
    monkeypatch.setenv("LODESTAR_IDENTITY_GRPC_PORT", "7001")
    monkeypatch.setenv("LODESTAR_GRPC_PORT", "7999")
    assert load_settings(IdentitySettings).grpc_port == 7001
    assert load_settings(ProfileSettings).grpc_port == 50052


def test_gateway_settings_read_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway_keys(monkeypatch)
    monkeypatch.setenv("LODESTAR_GATEWAY_HTTP_PORT", "8080")
    monkeypatch.setenv("LODESTAR_IDENTITY_ADDR", "identity:50051")
    settings = load_settings(GatewaySettings)
    assert settings.http_port == 8080
    assert settings.identity_addr == "identity:50051"
    assert settings.write_key.get_secret_value() == "write-key-123"
    # GraphQL API keys are in the gateway's database, not in its settings.
    assert not hasattr(settings, "api_key")
    # Secrets do not show in a repr that might end up in a log line.
    assert "write-key-123" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = load_settings(ProfileSettings)
    with pytest.raises(ValueError, match="frozen"):
        settings.grpc_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LODESTAR_PROFILE_GRPC_PORT", "abc"),
        ("LODESTAR_PROFILE_GRPC_PORT", "70000"),
        ("LODESTAR_KAFKA_SESSION_TIMEOUT_MS", "5"),
        ("LODESTAR_KAFKA_MAX_BATCH", "0"),
        ("LODESTAR_MONGO_URI", "postgres://db"),
        ("LODESTAR_LOG_LEVEL", "CHATTY"),
    ],
)
def test_bad_value_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        load_settings(ProfileSettings)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    assert f"{variable}: " in err
    # One line per bad variable, and no traceback.
    assert err.count("LODESTAR_") == 1
    assert "Traceback" not in err


def test_every_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LODESTAR_PROFILE_GRPC_PORT", "abc")
    monkeypatch.setenv("LODESTAR_KAFKA_SESSION_TIMEOUT_MS", "5")
    with pytest.raises(SystemExit) as exited:
        load_settings(ProfileSettings)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "LODESTAR_PROFILE_GRPC_PORT: " in err
    assert "LODESTAR_KAFKA_SESSION_TIMEOUT_MS: " in err


def test_missing_gateway_write_key_is_required(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway_keys(monkeypatch)
    monkeypatch.delenv("LODESTAR_WRITE_KEY")
    with pytest.raises(SystemExit) as exited:
        load_settings(GatewaySettings)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "LODESTAR_WRITE_KEY: is required" in err
    # The GraphQL API key setting is gone: keys are created with `python -m gateway keys`.
    assert "LODESTAR_API_KEY" not in err


def test_short_write_key_is_rejected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway_keys(monkeypatch)
    monkeypatch.setenv("LODESTAR_WRITE_KEY", "short")
    with pytest.raises(SystemExit):
        load_settings(GatewaySettings)
    err = capsys.readouterr().err
    assert "LODESTAR_WRITE_KEY: " in err
    # The rejected secret itself is not echoed.
    assert "short'" not in err


def test_dedupe_window_smaller_than_batch_is_rejected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LODESTAR_KAFKA_MAX_BATCH", "800")
    monkeypatch.setenv("LODESTAR_PROFILE_DEDUPE_WINDOW", "500")
    with pytest.raises(SystemExit) as exited:
        load_settings(ProfileSettings)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "LODESTAR_PROFILE_DEDUPE_WINDOW" in err
    assert "LODESTAR_KAFKA_MAX_BATCH" in err
    assert "500 < 800" in err
    # The line starts with the variable to change, not a placeholder.
    assert err.splitlines()[1].startswith("LODESTAR_PROFILE_DEDUPE_WINDOW must be >=")


def test_dedupe_window_equal_to_batch_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_KAFKA_MAX_BATCH", "800")
    monkeypatch.setenv("LODESTAR_PROFILE_DEDUPE_WINDOW", "800")
    settings = load_settings(ProfileSettings)
    assert settings.profile_dedupe_window == settings.kafka_max_batch == 800


def test_bus_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")
    monkeypatch.setenv("LODESTAR_KAFKA_IDEMPOTENT_PRODUCER", "true")
    monkeypatch.setenv("LODESTAR_KAFKA_SESSION_TIMEOUT_MS", "2000")
    monkeypatch.setenv("LODESTAR_KAFKA_MAX_BATCH", "100")
    monkeypatch.setenv("LODESTAR_KAFKA_HANDLER_RETRIES", "0")
    monkeypatch.setenv("LODESTAR_KAFKA_RETRY_BACKOFF_MS", "10")
    monkeypatch.setenv("LODESTAR_KAFKA_TOPIC_PARTITIONS", "3")
    monkeypatch.setenv("LODESTAR_KAFKA_REPLICATION_FACTOR", "2")
    config = BusConfig.from_settings(load_settings(ProfileSettings), "profile")
    assert config == BusConfig(
        bootstrap_servers="kafka:9093",
        client_id="profile",
        idempotent_producer=True,
        session_timeout_ms=2000,
        max_batch=100,
        handler_retries=0,
        retry_backoff_ms=10,
        partitions=3,
        replication_factor=2,
    )


def test_service_entry_point_fails_fast_on_bad_port() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LODESTAR_")}
    env["LODESTAR_PROFILE_GRPC_PORT"] = "abc"
    # Nothing listens on these: a process that got past its settings would hang or fail
    # differently, not exit 2 at once.
    env["LODESTAR_KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
    env["LODESTAR_MONGO_URI"] = "mongodb://127.0.0.1:1"
    env["LODESTAR_METRICS_PORT"] = "0"
    done = subprocess.run(
        [sys.executable, "-m", "services.profile"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "LODESTAR_PROFILE_GRPC_PORT" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("LODESTAR_PII_KEYS", "k1:not-base64!", "PII"),
        ("LODESTAR_PII_ACTIVE_KEY_ID", "missing", "missing"),
        ("LODESTAR_IDENTITY_LIMITS", "email=many", "LODESTAR_IDENTITY_LIMITS"),
        ("LODESTAR_IDENTITY_LIMITS", "shoe_size=3", "shoe_size"),
        ("LODESTAR_IDENTITY_CUSTOM_TYPES", "Bad Type", "Bad Type"),
        ("LODESTAR_IDENTITY_BLOCKED_PATTERNS", '["(unclosed"]', "(unclosed"),
        ("LODESTAR_IDENTITY_PHONE_DEFAULT_REGION", "ZZ", "ZZ"),
    ],
)
def test_bad_identity_settings_stop_start_up_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        load_settings(IdentitySettings)
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_identity_settings_build_the_configured_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_IDENTITY_CUSTOM_TYPES", "crm_id, shop_id")
    monkeypatch.setenv("LODESTAR_IDENTITY_LIMITS", "email=3,crm_id=2")
    monkeypatch.setenv("LODESTAR_IDENTITY_BLOCKED_PATTERNS", '["^guest-"]')
    rules = load_settings(IdentitySettings).rules()
    assert rules.limit("email") == 3
    assert rules.limit("crm_id") == 2
    assert rules.rank("shop_id") < rules.rank("anonymous_id")
    assert rules.is_blocked("guest-123")


def test_tiers_by_purchases_have_their_own_defaults_and_units(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LODESTAR_PROFILE_TIER_BASIS", "purchases")
    rules = load_settings(ProfileSettings).loyalty_rules()
    assert rules.tier_basis == "purchases"
    assert rules.tiers == (("Bronze", 0), ("Silver", 5), ("Gold", 15), ("Platinum", 40))
    monkeypatch.setenv("LODESTAR_PROFILE_TIERS", "Member=0,VIP=2.5")
    with pytest.raises(SystemExit):
        load_settings(ProfileSettings)
    assert "whole number of orders" in capsys.readouterr().err


def test_session_timeout_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_PROFILE_SESSION_TIMEOUT_MINUTES", "45")
    assert load_settings(ProfileSettings).session_timeout() == timedelta(minutes=45)
