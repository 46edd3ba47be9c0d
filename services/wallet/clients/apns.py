"""Pass update pushes through Apple's Push Notification service (APNs).

A Wallet pass update push is an HTTP/2 ``POST /3/device/<push token>`` whose topic is the pass
type identifier and whose payload is the empty dictionary ``{}``: it only tells the phone to ask
the PassKit web service what changed. The push is a background push, so its priority is 5
(APNs refuses priority 10 for background pushes).

Authentication is token based: an ES256 JWT (header ``alg``/``kid``, claims ``iss`` = team id,
``iat``) signed with the team's ``.p8`` auth key. APNs accepts a token for an hour and answers
``TooManyProviderTokenUpdates`` when it changes more often than every 20 minutes, so one token
serves every push and is replaced once it is 50 minutes old (or when APNs says it expired).

All pushes share one pooled HTTP/2 connection (APNs wants long-lived, multiplexed connections
rather than one per push). 429, 5xx and transport errors are retried with exponential backoff
and jitter; 410 means the phone no longer wants updates for this pass; any other 4xx is a
mistake in the request and is not retried.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth.crypt.es256 import ES256Signer

from services.platform.httpclient import PooledHttpClient
from services.platform.metrics import WALLET_APNS_PUSHES
from services.wallet.pushes import PushOutcome, PushResult

log = logging.getLogger(__name__)

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
PUSH_TYPE = "background"
PRIORITY = "5"
PASS_UPDATE_PAYLOAD = b"{}"
# APNs rejects tokens older than an hour and token changes more often than every 20 minutes.
TOKEN_REFRESH_AFTER_S = 50 * 60
MAX_CONCURRENT_PUSHES = 100
MAX_BACKOFF_S = 30.0
# APNs device tokens are 64 hex digits today; Apple says not to rely on the length.
_DEVICE_TOKEN = re.compile(r"^[0-9A-Fa-f]{16,200}$")
_EXPIRED = "ExpiredProviderToken"


@dataclass(frozen=True)
class ApnsCredentials:
    """The team's APNs auth key (the EC P-256 ``.p8`` file) with its key id and team id."""

    team_id: str
    key_id: str
    private_key_pem: bytes = field(repr=False)

    def __post_init__(self) -> None:
        key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("an APNs auth key must be an EC P-256 private key")
        if not self.team_id or not self.key_id:
            raise ValueError("APNs credentials need a team id and a key id")

    @classmethod
    def from_file(cls, path: Path, team_id: str, key_id: str) -> ApnsCredentials:
        """Load a ``.p8`` auth key (PKCS#8 PEM); a bad file raises ``ValueError`` naming it."""
        try:
            return cls(team_id, key_id, path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path} is not a readable APNs auth key: {exc}") from exc


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def provider_token(credentials: ApnsCredentials, issued_at: int) -> str:
    """A signed provider authentication token (ES256 JWT) issued at ``issued_at``."""
    signer = ES256Signer.from_string(credentials.private_key_pem, credentials.key_id)
    signing_input = ".".join(
        (
            _json_segment({"alg": "ES256", "kid": credentials.key_id}),
            _json_segment({"iss": credentials.team_id, "iat": issued_at}),
        )
    )
    # The signer gives the JOSE form (raw r||s, 64 bytes), not DER.
    return f"{signing_input}.{_b64url(signer.sign(signing_input.encode('ascii')))}"


class ProviderTokens:
    """The one provider token in use: made on first use, replaced once it is
    :data:`TOKEN_REFRESH_AFTER_S` old or when APNs calls it expired."""

    def __init__(self, credentials: ApnsCredentials, clock: Callable[[], float]) -> None:
        self.credentials = credentials
        self.clock = clock
        self._token = ""
        self._issued_at = 0

    def current(self) -> str:
        """The token to send now."""
        now = int(self.clock())
        if not self._token or now - self._issued_at >= TOKEN_REFRESH_AFTER_S:
            self._issue(now)
        return self._token

    def expired(self, token: str) -> None:
        """APNs refused ``token`` as expired: replace it, unless another push already did
        (many in-flight pushes hear the same answer; one new token is enough)."""
        if token == self._token:
            self._issue(int(self.clock()))

    def _issue(self, now: int) -> None:
        self._token = provider_token(self.credentials, now)
        self._issued_at = now


def backoff_delay(
    attempt: int, base_s: float, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): the exponential
    delay ``base_s * 2**(attempt-1)``, capped at :data:`MAX_BACKOFF_S`, of which a random
    half is kept ("equal jitter") so many retrying pushes do not come back in step."""
    delay = min(MAX_BACKOFF_S, base_s * 2.0 ** (attempt - 1))
    return delay / 2 + delay / 2 * jitter()


def valid_device_token(device_token: str) -> bool:
    """True when ``device_token`` looks like an APNs device token (hex digits)."""
    return _DEVICE_TOKEN.match(device_token) is not None


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


def _timestamp(response: httpx.Response) -> int | None:
    try:
        value = response.json().get("timestamp")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int | float) else None


class ApnsClient(PooledHttpClient):
    """Sends pass update pushes to APNs at ``base_url`` (:data:`PRODUCTION_URL`, the sandbox,
    or the local stand-in). ``ca_file`` replaces the system trust store (for the stand-in's
    dev CA). ``transport`` is for tests that answer requests without a server; ``on_outcome``
    hears whether APNs answered each push."""

    def __init__(
        self,
        base_url: str,
        credentials: ApnsCredentials,
        *,
        ca_file: Path | None = None,
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        on_outcome: Callable[[bool], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.tokens = ProviderTokens(credentials, clock)
        self.ca_file = ca_file
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._transport = transport
        # Told after each push whether APNs answered it (False: FAILED, i.e. 429, 5xx or no
        # answer until the attempts ran out), for the wallet's dependency health.
        self.on_outcome = on_outcome
        super().__init__(self._open)
        self._streams = asyncio.Semaphore(MAX_CONCURRENT_PUSHES)

    def _open(self) -> httpx.AsyncClient:
        verify = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        return httpx.AsyncClient(
            base_url=self.base_url,
            http2=True,
            verify=verify,
            transport=self._transport,
            timeout=httpx.Timeout(self.timeout_s),
            # One connection: APNs multiplexes many streams on it and dislikes churn.
            limits=httpx.Limits(
                max_connections=1, max_keepalive_connections=1, keepalive_expiry=600.0
            ),
        )

    async def push_many(self, targets: Sequence[tuple[str, str]]) -> list[PushResult]:
        """Push to every ``(device_token, topic)`` concurrently over the one connection (at
        most :data:`MAX_CONCURRENT_PUSHES` in flight); results are in the order of
        ``targets``."""
        return list(await asyncio.gather(*(self.push(token, topic) for token, topic in targets)))

    async def push(self, device_token: str, topic: str) -> PushResult:
        """Tell the phone with ``device_token`` that a pass of type ``topic`` changed."""
        if not valid_device_token(device_token):
            result = PushResult(PushOutcome.REJECTED, None, "BadDeviceToken", "", 0)
        else:
            result = await self._send(device_token, topic)
        WALLET_APNS_PUSHES.labels(result.outcome.value).inc()
        if self.on_outcome is not None:
            self.on_outcome(result.outcome is not PushOutcome.FAILED)
        if result.outcome is not PushOutcome.DELIVERED:
            self._log(result, device_token, topic)
        return result

    async def _send(self, device_token: str, topic: str) -> PushResult:
        attempts = 0
        refreshed = False
        while True:
            attempts += 1
            token = self.tokens.current()
            try:
                async with self._streams:
                    response = await self.http().post(
                        f"/3/device/{device_token}",
                        headers={
                            "authorization": f"bearer {token}",
                            "apns-topic": topic,
                            "apns-push-type": PUSH_TYPE,
                            "apns-priority": PRIORITY,
                            "content-type": "application/json",
                        },
                        content=PASS_UPDATE_PAYLOAD,
                    )
            except httpx.TransportError as exc:
                status, reason, apns_id = None, f"{type(exc).__name__}: {exc}", ""
            else:
                status, reason = response.status_code, _reason(response)
                apns_id = response.headers.get("apns-id", "")
                if status == 200:
                    return PushResult(PushOutcome.DELIVERED, status, reason, apns_id, attempts)
                if status == 410:
                    return PushResult(
                        PushOutcome.UNREGISTERED,
                        status,
                        reason or "Unregistered",
                        apns_id,
                        attempts,
                        _timestamp(response),
                    )
                if status == 403 and reason == _EXPIRED and not refreshed:
                    self.tokens.expired(token)
                    refreshed = True
                    continue
                if status != 429 and status < 500:
                    return PushResult(PushOutcome.REJECTED, status, reason, apns_id, attempts)
            if attempts >= self.max_attempts:
                return PushResult(PushOutcome.FAILED, status, reason, apns_id, attempts)
            delay = backoff_delay(attempts, self.backoff_s)
            log.info(
                "APNs push attempt failed; retrying",
                extra={"fields": {"status": status, "reason": reason, "attempt": attempts}},
            )
            await asyncio.sleep(delay)

    def _log(self, result: PushResult, device_token: str, topic: str) -> None:
        level = logging.INFO if result.outcome is PushOutcome.UNREGISTERED else logging.WARNING
        log.log(
            level,
            "APNs push not delivered",
            extra={
                "fields": {
                    "outcome": result.outcome.value,
                    "status": result.status,
                    "reason": result.reason,
                    "apns_id": result.apns_id,
                    "attempts": result.attempts,
                    "topic": topic,
                    # Enough to find the registration, not the whole device identifier.
                    "device_token_prefix": device_token[:8],
                }
            },
        )
