"""The Google Wallet API client (walletobjects v1): the service account's RS256 JWTs, the
OAuth 2.0 JWT-bearer token exchange, the REST calls with their retries, and the signed
"Save to Google Wallet" link. The bodies it sends are built by :mod:`services.wallet.google`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt
from google.auth import jwt as google_jwt

from services.platform.httpclient import PooledHttpClient
from services.wallet.google import (
    NOTIFY_ON_UPDATE,
    Resource,
    check_id,
    check_resource,
    save_claims,
    text_message,
    valid_issuer_id,
)

API_BASE_URL = "https://walletobjects.googleapis.com/walletobjects/v1"
TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
SAVE_URL_BASE = "https://pay.google.com/gp/v/save/"
WALLET_SCOPE = "https://www.googleapis.com/auth/wallet_object.issuer"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600
# Refresh a cached access token this long before Google says it expires.
TOKEN_REFRESH_MARGIN_S = 300
# A longer Retry-After is capped: the caller's own later retry covers longer outages.
MAX_RETRY_AFTER_S = 30.0
# A save link names only object ids, so it is signed once and reused (ListPasses shows
# every pass's link, and an RS256 signature costs ~1 ms of CPU); re-signed after this long,
# and at most this many are kept.
SAVE_LINK_REUSE_S = 3600.0
SAVE_LINK_CACHE_SIZE = 10_000


class GoogleWalletError(Exception):
    """A Google Wallet call that failed for good: ``status`` is the HTTP status (0 when no
    response came back) and ``message`` names the call and what Google said."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        """True when trying again later may work (no answer, 429 or 5xx after every retry)."""
        return self.status in (0, 429) or self.status >= 500


class GoogleWalletAuthError(GoogleWalletError):
    """The token endpoint refused the service account's assertion (wrong key, wrong account,
    wrong token URI)."""


# --- service account and signed JWTs -------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccount:
    """A Google Cloud service account key: who signs, with which key."""

    client_email: str
    private_key_id: str
    private_key: str = field(repr=False)
    token_uri: str = TOKEN_URI

    @classmethod
    def from_info(cls, info: Mapping[str, Any], source: str = "the key") -> ServiceAccount:
        """From the parsed JSON key; ``ValueError`` naming ``source`` when it is not usable."""
        if info.get("type") != "service_account":
            raise ValueError(
                f"{source} is not a service account key (type must be service_account)"
            )
        missing = [k for k in ("client_email", "private_key_id", "private_key") if not info.get(k)]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}")
        private_key = str(info["private_key"])
        try:
            key = serialization.load_pem_private_key(private_key.encode(), None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: private_key is not an unencrypted PEM key") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{source}: private_key must be an RSA key (RS256)")  # noqa: TRY004
        return cls(
            client_email=str(info["client_email"]),
            private_key_id=str(info["private_key_id"]),
            private_key=private_key,
            token_uri=str(info.get("token_uri") or TOKEN_URI),
        )

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        """Read the standard service-account JSON key file."""
        try:
            info = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a readable JSON key file") from exc
        if not isinstance(info, dict):
            raise ValueError(f"{path} is not a service account key (not a JSON object)")  # noqa: TRY004
        return cls.from_info(info, str(path))

    @cached_property
    def signer(self) -> crypt.RSASigner:
        """The RS256 signer of the key (its id goes into every JWT header as ``kid``)."""
        signer: crypt.RSASigner = crypt.RSASigner.from_string(  # type: ignore[no-untyped-call]
            self.private_key, key_id=self.private_key_id
        )
        return signer

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact RS256 JWT of ``claims``."""
        token: bytes = google_jwt.encode(self.signer, dict(claims), key_id=self.private_key_id)  # type: ignore[no-untyped-call]
        return token.decode()


def token_assertion(account: ServiceAccount, token_uri: str, now: float) -> str:
    """The signed assertion of the JWT-bearer grant: the service account asks ``token_uri``
    for a token with the Wallet issuer scope, valid for an hour from ``now``."""
    issued = int(now)
    return account.sign(
        {
            "iss": account.client_email,
            "scope": WALLET_SCOPE,
            "aud": token_uri,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME_S,
        }
    )


def save_jwt(
    account: ServiceAccount,
    objects: Sequence[tuple[Resource, str]],
    origins: Sequence[str],
    now: float,
) -> str:
    """The signed "Save to Google Wallet" JWT naming only the objects' ids (the objects were
    inserted through the API already, so the link stays short and holds no customer data)."""
    return account.sign(save_claims(account.client_email, objects, origins, now))


# (resource, object id) pairs and origins: what a save link's JWT says.
_SaveLinkKey = tuple[tuple[tuple[str, str], ...], tuple[str, ...]]


# --- the REST client ------------------------------------------------------------------------


def _google_message(response: httpx.Response) -> str:
    """What Google said, from its error shape ``{"error": {"code", "message", "status"}}``."""
    try:
        doc = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        status = error.get("status", "")
        return f"{status}: {error.get('message', '')}".strip(": ")
    if isinstance(error, str):  # the OAuth token endpoint's shape
        return f"{error}: {doc.get('error_description', '')}".strip(": ")
    return response.text[:200]


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError as exc:
        raise GoogleWalletError(response.status_code, f"{what}: answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise GoogleWalletError(response.status_code, f"{what}: answer is not a JSON object")
    return doc


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", "0")), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


class GoogleWalletClient(PooledHttpClient):
    """The Google Wallet API for one issuer, authenticated as one service account.

    Access tokens come from the JWT-bearer grant and are cached until shortly before they
    expire; a 401 refreshes the token once and repeats the call. 429, 5xx and transport errors
    are retried with exponential backoff and jitter up to ``max_attempts``; anything else that
    is not a success raises :class:`GoogleWalletError` naming the call.

    ``token_uri`` is where assertions go and the audience they name; it wins over the key
    file's ``token_uri`` so settings can point both URLs at the loopback stand-in.
    """

    def __init__(
        self,
        api_base_url: str,
        token_uri: str,
        issuer_id: str,
        account: ServiceAccount,
        *,
        save_url_base: str = SAVE_URL_BASE,
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        on_outcome: Callable[[bool], None] | None = None,
    ) -> None:
        if not valid_issuer_id(issuer_id):
            raise ValueError(f"issuer id {issuer_id!r} must be the digits Google assigned")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.api_base_url = api_base_url.rstrip("/")
        self.token_uri = token_uri
        self.issuer_id = issuer_id
        self.account = account
        self.save_url_base = save_url_base
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.clock = clock
        # Told after each call whether Google answered (False: no answer, 429 or 5xx after
        # every retry), for the wallet's dependency health.
        self.on_outcome = on_outcome
        super().__init__(
            lambda: httpx.AsyncClient(
                timeout=timeout_s,
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            )
        )
        self._token = ""
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        self._save_links: OrderedDict[_SaveLinkKey, tuple[str, float]] = OrderedDict()

    # -- transport --

    async def _pause(self, attempt: int, response: httpx.Response | None) -> None:
        base = self.backoff_s * 2 ** (attempt - 1)
        # Jitter spreads retries of many workers apart; it is not used for security.
        delay = base / 2 + random.uniform(0, base / 2)  # noqa: S311
        if response is not None:
            delay = max(delay, _retry_after(response))
        await asyncio.sleep(delay)

    async def _send(
        self,
        what: str,
        method: str,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call with retries; returns any answer that is not 429/5xx."""
        try:
            response = await self._send_retrying(
                what, method, url, json_body=json_body, form=form, headers=headers
            )
        except GoogleWalletError:
            self._outcome(False)
            raise
        self._outcome(True)
        return response

    def _outcome(self, answered: bool) -> None:
        if self.on_outcome is not None:
            self.on_outcome(answered)

    async def _send_retrying(
        self,
        what: str,
        method: str,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                response = await self.http().request(
                    method, url, json=json_body, data=form, headers=headers
                )
            except httpx.TransportError as exc:
                if last:
                    raise GoogleWalletError(
                        0, f"{what}: no answer from {url} after {attempt} attempts ({exc!r})"
                    ) from exc
                await self._pause(attempt, None)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if last:
                    raise GoogleWalletError(
                        response.status_code,
                        f"{what}: HTTP {response.status_code} after {attempt} attempts: "
                        f"{_google_message(response)}",
                    )
                await self._pause(attempt, response)
                continue
            return response
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token and self.clock() < self._token_expires_at:
                return self._token
            what = f"token exchange at {self.token_uri}"
            now = self.clock()
            response = await self._send(
                what,
                "POST",
                self.token_uri,
                form={
                    "grant_type": JWT_BEARER_GRANT,
                    "assertion": token_assertion(self.account, self.token_uri, now),
                },
            )
            if response.status_code != 200:
                raise GoogleWalletAuthError(
                    response.status_code,
                    f"{what} refused the key {self.account.private_key_id!r} of "
                    f"{self.account.client_email}: {_google_message(response)}",
                )
            doc = _json_object(response, what)
            token = doc.get("access_token")
            if not isinstance(token, str) or not token:
                raise GoogleWalletAuthError(response.status_code, f"{what}: no access_token")
            lifetime = float(doc.get("expires_in", ASSERTION_LIFETIME_S))
            self._token = token
            self._token_expires_at = now + lifetime - min(TOKEN_REFRESH_MARGIN_S, lifetime / 2)
            return token

    def _forget_token(self, token: str) -> None:
        if self._token == token:
            self._token = ""

    async def _call(
        self,
        what: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        tolerate: tuple[int, ...] = (),
    ) -> httpx.Response:
        """An authenticated API call; statuses in ``tolerate`` are returned, not raised."""
        url = f"{self.api_base_url}/{path}"
        response: httpx.Response | None = None
        for _ in range(2):  # a 401 refreshes the token once
            token = await self._access_token()
            response = await self._send(
                what, method, url, json_body=body, headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code != 401:
                break
            self._forget_token(token)
        assert response is not None
        if response.is_success or response.status_code in tolerate:
            return response
        raise GoogleWalletError(
            response.status_code,
            f"{what}: HTTP {response.status_code} {_google_message(response)}",
        )

    # -- operations --

    async def ensure_class(self, resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """Insert the class, or patch it to ``body`` when it exists, so template changes reach
        Google. Returns the class as Google stores it."""
        known = check_resource(resource)
        checked = check_id(str(body.get("id", "")))
        response = await self._call(
            f"insert {known}Class {checked}", "POST", f"{known}Class", body, tolerate=(409,)
        )
        if response.status_code == 409:
            response = await self._call(
                f"patch {known}Class {checked}", "PATCH", f"{known}Class/{checked}", body
            )
        return _json_object(response, f"{known}Class {checked}")

    async def insert_object(self, resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """Insert the object; when it exists already (redelivered work) return the stored one."""
        known = check_resource(resource)
        object_id = check_id(str(body.get("id", "")))
        what = f"insert {known}Object {object_id}"
        response = await self._call(what, "POST", f"{known}Object", body, tolerate=(409,))
        if response.status_code == 409:
            return await self.get_object(known, object_id)
        return _json_object(response, what)

    async def patch_object(
        self, resource: Resource, object_id: str, body: Mapping[str, Any], *, notify: bool = True
    ) -> dict[str, Any]:
        """Patch the object's top-level fields; with ``notify`` the patch carries
        ``notifyPreference: NOTIFY_ON_UPDATE`` so Google tells the holder (for the fields it
        notifies about; the setting holds for this one request only)."""
        known = check_resource(resource)
        checked = check_id(object_id)
        patch = {k: v for k, v in body.items() if k != "notifyPreference"}
        if notify:
            patch["notifyPreference"] = NOTIFY_ON_UPDATE
        what = f"patch {known}Object {checked}"
        response = await self._call(what, "PATCH", f"{known}Object/{checked}", patch)
        return _json_object(response, what)

    async def add_message(
        self, resource: Resource, object_id: str, header: str, body: str, message_id: str
    ) -> dict[str, Any]:
        """Add a message to the back of the pass and push it to the phone (TEXT_AND_NOTIFY).
        Returns the object with its messages."""
        known = check_resource(resource)
        checked = check_id(object_id)
        what = f"addMessage to {known}Object {checked}"
        response = await self._call(
            what,
            "POST",
            f"{known}Object/{checked}/addMessage",
            {"message": text_message(header, body, message_id)},
        )
        doc = _json_object(response, what)
        resource_doc = doc.get("resource")
        return resource_doc if isinstance(resource_doc, dict) else doc

    async def get_object(self, resource: Resource, object_id: str) -> dict[str, Any]:
        """The object as Google stores it; a 404 raises :class:`GoogleWalletError`."""
        known = check_resource(resource)
        checked = check_id(object_id)
        what = f"get {known}Object {checked}"
        response = await self._call(what, "GET", f"{known}Object/{checked}")
        return _json_object(response, what)

    def save_link(
        self, objects: Sequence[tuple[Resource, str]], origins: Sequence[str] = ()
    ) -> str:
        """The "Save to Google Wallet" URL of already inserted objects: signed once per set of
        objects and origins and reused for up to ``SAVE_LINK_REUSE_S`` (an object that changes
        keeps its id, so its link stays the same; a new object gets a new link)."""
        key: _SaveLinkKey = (tuple((str(r), str(o)) for r, o in objects), tuple(origins))
        now = self.clock()
        cached = self._save_links.get(key)
        if cached is not None and 0 <= now - cached[1] < SAVE_LINK_REUSE_S:
            self._save_links.move_to_end(key)
            return cached[0]
        link = self.save_url_base + save_jwt(self.account, objects, origins, now)
        self._save_links[key] = (link, now)
        self._save_links.move_to_end(key)
        if len(self._save_links) > SAVE_LINK_CACHE_SIZE:
            self._save_links.popitem(last=False)  # the least recently used
        return link
