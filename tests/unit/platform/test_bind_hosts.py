"""Every door binds to loopback unless a setting opens it (Kubernetes sets 0.0.0.0)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from services.identity.settings import IdentitySettings
from services.platform.metrics import serve_metrics
from services.platform.settings import ServiceSettings, describe_errors, load_settings
from services.profile.settings import ProfileSettings
from services.recommendation.settings import RecommendationSettings
from services.segmentation.settings import SegmentationSettings
from services.wallet.devcerts import ensure_dev_certificates
from services.wallet.settings import WalletSettings
from tests.support.identity import only_test_settings
from tests.support.sockets import listening_addresses


def wallet_env(directory: Path) -> dict[str, str]:
    """What the wallet needs to load its settings: a web service URL and dev certificates."""
    files = ensure_dev_certificates(directory, "pass.com.example.loyalty", "TEAM123456")
    return {
        "LODESTAR_WALLET_WEB_SERVICE_URL": "https://wallet.example.com/passkit",
        "LODESTAR_WALLET_APPLE_CERTIFICATE": str(files.certificate),
        "LODESTAR_WALLET_APPLE_KEY": str(files.key),
        "LODESTAR_WALLET_APPLE_WWDR_CERTIFICATE": str(files.intermediate),
    }


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: no ``LODESTAR_*`` of the developer's shell."""
    only_test_settings(monkeypatch)
    monkeypatch.setenv("LODESTAR_WRITE_KEY", "write-key-123")


@pytest.mark.parametrize(
    "settings_type",
    [IdentitySettings, ProfileSettings, SegmentationSettings, RecommendationSettings],
)
def test_grpc_and_metrics_bind_to_loopback_by_default(
    settings_type: type[ServiceSettings],
) -> None:
    settings = load_settings(settings_type)
    assert settings.grpc_host == "127.0.0.1"
    assert settings.metrics_host == "127.0.0.1"


def test_gateway_and_passkit_bind_to_loopback_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings(GatewaySettings).http_host == "127.0.0.1"
    for name, value in wallet_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    wallet = load_settings(WalletSettings)
    assert wallet.passkit_host == "127.0.0.1"
    assert wallet.grpc_host == "127.0.0.1"


def test_a_setting_opens_each_door(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LODESTAR_GRPC_HOST", "0.0.0.0")
    monkeypatch.setenv("LODESTAR_GRPC_TOKEN", "a-service-token-0123456789")
    monkeypatch.setenv("LODESTAR_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("LODESTAR_METRICS_TOKEN", "a-metrics-token-0123456789")
    monkeypatch.setenv("LODESTAR_GATEWAY_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("LODESTAR_WALLET_HTTP_HOST", "0.0.0.0")
    for name, value in wallet_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert load_settings(ProfileSettings).grpc_host == "0.0.0.0"
    assert load_settings(ProfileSettings).metrics_host == "0.0.0.0"
    assert load_settings(GatewaySettings).http_host == "0.0.0.0"
    assert load_settings(WalletSettings).passkit_host == "0.0.0.0"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_metrics_listen_on_loopback_only() -> None:
    port = free_port()
    serve_metrics(port, load_settings(ProfileSettings).metrics_host)
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    assert listening_addresses(port) == {"127.0.0.1"}


def test_metrics_behind_the_token_need_it() -> None:
    port = free_port()
    token = "a-metrics-token-0123456789"
    serve_metrics(port, "127.0.0.1", token)
    url = f"http://127.0.0.1:{port}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert scraped.status_code == 200
    assert "lodestar_grpc_requests_total" in scraped.text


def test_open_metrics_need_the_metrics_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_METRICS_HOST", "0.0.0.0")
    with pytest.raises(ValidationError) as caught:
        ProfileSettings()
    assert "LODESTAR_METRICS_TOKEN is required" in describe_errors(caught.value)
    monkeypatch.delenv("LODESTAR_METRICS_HOST")
    monkeypatch.setenv("LODESTAR_GATEWAY_HTTP_HOST", "0.0.0.0")
    with pytest.raises(ValidationError) as caught:
        GatewaySettings()
    assert "LODESTAR_METRICS_TOKEN is required" in describe_errors(caught.value)


def test_an_open_grpc_port_needs_the_service_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_GRPC_HOST", "0.0.0.0")
    with pytest.raises(ValidationError) as caught:
        ProfileSettings()
    assert "LODESTAR_GRPC_TOKEN is required" in describe_errors(caught.value)
    monkeypatch.setenv("LODESTAR_GRPC_TOKEN", "short")
    with pytest.raises(ValidationError) as caught:
        ProfileSettings()
    assert "LODESTAR_GRPC_TOKEN" in describe_errors(caught.value)
