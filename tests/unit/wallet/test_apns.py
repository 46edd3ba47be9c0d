"""The APNs client without a server: the provider token (header, claims, signature, reuse and
refresh with a fake clock), the request a pass update push sends, which answers are retried
and how long it waits, and device tokens refused before any request."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from google.auth.crypt.es256 import ES256Verifier
from prometheus_client import REGISTRY

from services.wallet.clients.apns import (
    MAX_BACKOFF_S,
    TOKEN_REFRESH_AFTER_S,
    ApnsClient,
    ApnsCredentials,
    ProviderTokens,
    backoff_delay,
    provider_token,
    valid_device_token,
)
from services.wallet.pushes import PushOutcome

TEAM_ID = "TEAMTEST01"
KEY_ID = "KEYTEST001"
TOPIC = "pass.com.example.lodestar.test"
DEVICE_TOKEN = "0123456789abcdef" * 4
T0 = 1_750_000_000.0

Handler = Callable[[httpx.Request], httpx.Response]


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _segments(token: str) -> tuple[dict[str, object], dict[str, object], bytes]:
    header, claims, signature = token.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(claims)), _unb64(signature)


@pytest.fixture(scope="module")
def auth_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def credentials(auth_key: ec.EllipticCurvePrivateKey) -> ApnsCredentials:
    pem = auth_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ApnsCredentials(TEAM_ID, KEY_ID, pem)


class FakeClock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Apns:
    """Answers pushes from a script (the last answer repeats) and keeps the requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers) or [httpx.Response(200, headers={"apns-id": "ID-1"})]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def tokens(self) -> list[str]:
        return [r.headers["authorization"].removeprefix("bearer ") for r in self.requests]


def _client(
    credentials: ApnsCredentials,
    apns: Apns,
    clock: Callable[[], float] | None = None,
    max_attempts: int = 4,
) -> ApnsClient:
    return ApnsClient(
        "https://apns.invalid",
        credentials,
        max_attempts=max_attempts,
        backoff_s=0.001,
        clock=clock or FakeClock(),
        transport=httpx.MockTransport(apns),
    )


def _error(status: int, reason: str) -> httpx.Response:
    return httpx.Response(status, json={"reason": reason}, headers={"apns-id": "ID-E"})


def test_provider_token_is_an_es256_jwt_the_public_key_verifies(
    credentials: ApnsCredentials, auth_key: ec.EllipticCurvePrivateKey
) -> None:
    token = provider_token(credentials, 1_750_000_123)
    header, claims, signature = _segments(token)
    assert header == {"alg": "ES256", "kid": KEY_ID}
    assert claims == {"iss": TEAM_ID, "iat": 1_750_000_123}
    signing_input = token.rsplit(".", 1)[0].encode()
    public_pem = auth_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ES256Verifier.from_string(public_pem).verify(signing_input, signature)
    # JOSE form: raw r||s, as APNs expects, not DER.
    assert len(signature) == 64
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    auth_key.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        auth_key.public_key().verify(der, signing_input + b"x", ec.ECDSA(hashes.SHA256()))


def test_another_key_does_not_verify_the_token(credentials: ApnsCredentials) -> None:
    token = provider_token(credentials, 1_750_000_123)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input, _, _ = token.rpartition(".")
    assert not ES256Verifier.from_string(other_pem).verify(
        signing_input.encode(), _segments(token)[2]
    )


async def test_one_token_serves_pushes_until_it_is_50_minutes_old(
    credentials: ApnsCredentials,
) -> None:
    clock = FakeClock()
    apns = Apns()
    async with _client(credentials, apns, clock) as client:
        for offset in (0, 60, 20 * 60, TOKEN_REFRESH_AFTER_S - 1):
            clock.now = T0 + offset
            assert (await client.push(DEVICE_TOKEN, TOPIC)).outcome is PushOutcome.DELIVERED
        clock.now = T0 + TOKEN_REFRESH_AFTER_S
        await client.push(DEVICE_TOKEN, TOPIC)
        clock.now = T0 + TOKEN_REFRESH_AFTER_S + 30 * 60
        await client.push(DEVICE_TOKEN, TOPIC)
    tokens = apns.tokens
    assert len(set(tokens[:4])) == 1
    assert tokens[4] != tokens[3]
    assert tokens[5] == tokens[4]
    assert [_segments(t)[1]["iat"] for t in (tokens[0], tokens[4])] == [
        int(T0),
        int(T0) + TOKEN_REFRESH_AFTER_S,
    ]


async def test_expired_provider_token_is_replaced_and_the_push_retried_once(
    credentials: ApnsCredentials,
) -> None:
    apns = Apns(_error(403, "ExpiredProviderToken"), httpx.Response(200))
    async with _client(credentials, apns) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.attempts) == (PushOutcome.DELIVERED, 2)
    assert apns.tokens[0] != apns.tokens[1]

    always_expired = Apns(_error(403, "ExpiredProviderToken"))
    async with _client(credentials, always_expired) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.REJECTED,
        403,
        "ExpiredProviderToken",
        2,
    )


def test_many_expired_answers_for_one_token_make_one_new_token(
    credentials: ApnsCredentials,
) -> None:
    tokens = ProviderTokens(credentials, FakeClock())
    stale = tokens.current()
    tokens.expired(stale)
    fresh = tokens.current()
    tokens.expired(stale)
    assert fresh != stale
    assert tokens.current() == fresh


async def test_a_pass_update_push_is_an_empty_background_push_to_the_pass_type(
    credentials: ApnsCredentials,
) -> None:
    apns = Apns()
    async with _client(credentials, apns) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.apns_id) == (PushOutcome.DELIVERED, 200, "ID-1")
    (request,) = apns.requests
    assert request.method == "POST"
    assert request.url.path == f"/3/device/{DEVICE_TOKEN}"
    assert request.headers["apns-topic"] == TOPIC
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-priority"] == "5"
    assert request.headers["authorization"].startswith("bearer ey")
    assert request.content == b"{}"


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [(1, 1.0, 0.2), (2, 1.0, 0.4), (3, 1.0, 0.8), (4, 1.0, 1.6), (1, 0.0, 0.1), (3, 0.5, 0.6)],
)
def test_backoff_doubles_per_attempt_and_keeps_a_random_half(
    attempt: int, jitter: float, delay: float
) -> None:
    assert backoff_delay(attempt, 0.2, lambda: jitter) == pytest.approx(delay)


def test_backoff_is_capped() -> None:
    assert backoff_delay(30, 0.2, lambda: 1.0) == MAX_BACKOFF_S
    assert backoff_delay(30, 0.2, lambda: 0.0) == MAX_BACKOFF_S / 2


@pytest.mark.parametrize(
    "token", [DEVICE_TOKEN, DEVICE_TOKEN.upper(), "ab" * 8, "a" * 200, "0" * 100]
)
def test_hex_device_tokens_are_valid(token: str) -> None:
    assert valid_device_token(token)


@pytest.mark.parametrize(
    "token",
    ["", "ab" * 7 + "a", "a" * 201, "g" * 64, DEVICE_TOKEN[:-1] + " ", "../../fake/pushes"],
)
async def test_bad_device_tokens_are_rejected_without_a_request(
    credentials: ApnsCredentials, token: str
) -> None:
    apns = Apns()
    async with _client(credentials, apns) as client:
        result = await client.push(token, TOPIC)
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.REJECTED,
        None,
        "BadDeviceToken",
        0,
    )
    assert apns.requests == []


async def test_429_and_5xx_are_retried_until_delivered(credentials: ApnsCredentials) -> None:
    apns = Apns(
        _error(503, "ServiceUnavailable"), _error(429, "TooManyRequests"), httpx.Response(200)
    )
    async with _client(credentials, apns) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.attempts) == (PushOutcome.DELIVERED, 3)


async def test_retries_stop_after_max_attempts(credentials: ApnsCredentials) -> None:
    apns = Apns(_error(500, "InternalServerError"))
    async with _client(credentials, apns, max_attempts=3) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.FAILED,
        500,
        "InternalServerError",
        3,
    )
    assert len(apns.requests) == 3


async def test_transport_errors_are_retried_then_fail(credentials: ApnsCredentials) -> None:
    apns = Apns(httpx.ConnectError("refused"))
    async with _client(credentials, apns, max_attempts=2) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.attempts) == (PushOutcome.FAILED, None, 2)
    assert "ConnectError" in result.reason


async def test_other_4xx_is_rejected_at_once(credentials: ApnsCredentials) -> None:
    apns = Apns(_error(400, "DeviceTokenNotForTopic"))
    async with _client(credentials, apns) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.REJECTED,
        400,
        "DeviceTokenNotForTopic",
        1,
    )


async def test_410_means_unregistered_with_apns_timestamp(credentials: ApnsCredentials) -> None:
    unregistered = {"reason": "Unregistered", "timestamp": 1_750_000_000_123}
    apns = Apns(httpx.Response(410, json=unregistered))
    async with _client(credentials, apns) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.UNREGISTERED,
        410,
        "Unregistered",
        1,
    )
    assert result.timestamp_ms == 1_750_000_000_123


@pytest.fixture
def outcomes() -> Callable[[str], float]:
    before = {
        outcome.value: REGISTRY.get_sample_value(
            "lodestar_wallet_apns_pushes_total", {"outcome": outcome.value}
        )
        or 0.0
        for outcome in PushOutcome
    }

    def counted_since(outcome: str) -> float:
        now = REGISTRY.get_sample_value("lodestar_wallet_apns_pushes_total", {"outcome": outcome})
        return (now or 0.0) - before[outcome]

    return counted_since


async def test_outcomes_are_counted_and_failures_logged_without_secrets(
    credentials: ApnsCredentials,
    outcomes: Callable[[str], float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    apns = Apns(httpx.Response(200), _error(400, "BadTopic"))
    with caplog.at_level(logging.INFO, logger="services.wallet.clients.apns"):
        async with _client(credentials, apns) as client:
            await client.push(DEVICE_TOKEN, TOPIC)
            await client.push(DEVICE_TOKEN, TOPIC)
            await client.push("not-hex", TOPIC)
    assert (outcomes("delivered"), outcomes("rejected"), outcomes("failed")) == (1.0, 2.0, 0.0)
    failures = [r for r in caplog.records if r.getMessage() == "APNs push not delivered"]
    assert [r.fields["reason"] for r in failures] == ["BadTopic", "BadDeviceToken"]  # type: ignore[attr-defined]
    logged = json.dumps([r.fields for r in failures])  # type: ignore[attr-defined]
    assert apns.tokens[0] not in logged
    assert DEVICE_TOKEN not in logged


def test_credentials_must_be_an_ec_p256_key(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "AuthKey_RSA.p8"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match=re.escape("AuthKey_RSA.p8")):
        ApnsCredentials.from_file(path, TEAM_ID, KEY_ID)
    with pytest.raises(ValueError, match=re.escape("missing.p8")):
        ApnsCredentials.from_file(tmp_path / "missing.p8", TEAM_ID, KEY_ID)


def test_credentials_do_not_show_the_key(credentials: ApnsCredentials) -> None:
    assert "PRIVATE KEY" not in repr(credentials)
