"""The ingest door's settings as read from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from services.platform.settings import describe_errors


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_WRITE_KEY", "wk_settings_123")


def test_defaults_open_nothing() -> None:
    settings = GatewaySettings()
    assert settings.ingest_cors_origins == ()
    assert settings.ingest_trusted_proxies == ()
    assert settings.ingest_max_batch_events == 2_500


def test_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "LODESTAR_INGEST_CORS_ORIGINS", " https://shop.example, http://localhost:3000 ,"
    )
    monkeypatch.setenv("LODESTAR_INGEST_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1,2001:db8::/32")
    settings = GatewaySettings()
    assert settings.ingest_cors_origins == ("https://shop.example", "http://localhost:3000")
    assert settings.ingest_trusted_proxies == ("10.0.0.0/8", "192.0.2.1", "2001:db8::/32")


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("LODESTAR_INGEST_CORS_ORIGINS", "shop.example", "not an origin"),
        ("LODESTAR_INGEST_CORS_ORIGINS", "https://shop.example/", "not an origin"),
        ("LODESTAR_INGEST_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal", "not an IP address"),
        ("LODESTAR_INGEST_RATE_LIMIT_PER_S", "0", "greater than 0"),
    ],
)
def test_bad_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        GatewaySettings()
    described = describe_errors(raised.value)
    assert variable in described
    assert problem in described
