"""Wallet settings fail fast on unusable signing files and name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.platform.settings import describe_errors
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.settings import WalletSettings
from tests.unit.wallet.conftest import PASS_TYPE_ID


def env(files: SigningFiles) -> dict[str, str]:
    return {
        "LODESTAR_WALLET_WEB_SERVICE_URL": "https://wallet.example.com/passkit",
        "LODESTAR_WALLET_APPLE_CERTIFICATE": str(files.certificate),
        "LODESTAR_WALLET_APPLE_KEY": str(files.key),
        "LODESTAR_WALLET_APPLE_WWDR_CERTIFICATE": str(files.intermediate),
    }


def load(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> WalletSettings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return WalletSettings()


def test_defaults_and_the_signer(
    monkeypatch: pytest.MonkeyPatch, signing_files: SigningFiles
) -> None:
    settings = load(monkeypatch, env(signing_files))
    assert settings.passkit_port == 8080
    assert settings.grpc_port == 50055
    assert settings.mongo_uri == "mongodb://127.0.0.1:27017"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.pass_signer().pass_type_id == PASS_TYPE_ID


def test_the_http_port_is_a_setting(
    monkeypatch: pytest.MonkeyPatch, signing_files: SigningFiles
) -> None:
    settings = load(monkeypatch, {**env(signing_files), "LODESTAR_WALLET_HTTP_PORT": "18080"})
    assert settings.passkit_port == 18080


def test_a_missing_file_is_named(
    monkeypatch: pytest.MonkeyPatch, signing_files: SigningFiles, tmp_path: Path
) -> None:
    values = {**env(signing_files), "LODESTAR_WALLET_APPLE_KEY": str(tmp_path / "none.pem")}
    with pytest.raises(ValidationError) as caught:
        load(monkeypatch, values)
    assert "LODESTAR_WALLET_APPLE_KEY: no file at" in describe_errors(caught.value)


def test_a_key_of_another_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch, signing_files: SigningFiles, tmp_path: Path
) -> None:
    other = ensure_dev_certificates(tmp_path, PASS_TYPE_ID, "OTHER")
    values = {**env(signing_files), "LODESTAR_WALLET_APPLE_KEY": str(other.key)}
    with pytest.raises(ValidationError, match="is not the key of the certificate"):
        load(monkeypatch, values)


def test_missing_settings_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LODESTAR_WALLET_WEB_SERVICE_URL", "LODESTAR_WALLET_APPLE_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError) as caught:
        WalletSettings()
    described = describe_errors(caught.value)
    assert "LODESTAR_WALLET_WEB_SERVICE_URL: is required but not set" in described
    assert "LODESTAR_WALLET_APPLE_CERTIFICATE: is required but not set" in described


def test_push_and_google_settings_default_and_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, signing_files: SigningFiles, tmp_path: Path
) -> None:
    settings = load(monkeypatch, env(signing_files))
    assert settings.wallet_apns_auth_key is None
    assert settings.wallet_push_delay_ms == 100
    assert settings.wallet_marketing_per_day == 1
    assert settings.live_policy().reminder_before.total_seconds() == 24 * 3600
    for extra, message in (
        (
            {"LODESTAR_WALLET_APNS_AUTH_KEY": str(tmp_path / "none.p8")},
            "LODESTAR_WALLET_APNS_AUTH_KEY: no file at",
        ),
        (
            {"LODESTAR_WALLET_GOOGLE_SERVICE_ACCOUNT": str(signing_files.certificate)},
            "LODESTAR_WALLET_GOOGLE_ISSUER_ID: required with a service account",
        ),
        ({"LODESTAR_WALLET_TIME_ZONE": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ):
        with monkeypatch.context() as patched:
            for name, value in extra.items():
                patched.setenv(name, value)
            with pytest.raises(ValidationError) as caught:
                WalletSettings()
            assert message in describe_errors(caught.value)


def test_download_links_are_keyed_by_the_secret_or_the_signing_key(
    monkeypatch: pytest.MonkeyPatch, signing_files: SigningFiles
) -> None:
    settings = load(monkeypatch, env(signing_files))
    assert settings.wallet_download_link_ttl_s == 300
    derived = settings.download_link_secret()
    # Every replica with the same signing key signs links alike; the key itself is not used.
    assert load(monkeypatch, env(signing_files)).download_link_secret() == derived
    assert derived not in signing_files.key.read_bytes()
    secret = "a download link secret of 32 ch."
    configured = load(
        monkeypatch, {**env(signing_files), "LODESTAR_WALLET_DOWNLOAD_LINK_SECRET": secret}
    )
    assert configured.download_link_secret() == secret.encode()
    with pytest.raises(ValidationError):
        load(monkeypatch, {**env(signing_files), "LODESTAR_WALLET_DOWNLOAD_LINK_SECRET": "short"})
    with pytest.raises(ValidationError):
        load(monkeypatch, {**env(signing_files), "LODESTAR_WALLET_DOWNLOAD_LINK_TTL_S": "0"})
