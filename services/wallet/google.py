"""Google Wallet passes: the REST client of the Google Wallet API (walletobjects v1), its
OAuth 2.0 service-account token exchange, the "Save to Google Wallet" link, and the class and
object bodies built from the same platform-neutral :class:`PassContent` the Apple side signs.

Google keeps the pass: Lodestar inserts a *class* per template and kind (brand, layout) and an
*object* per pass (balances, texts, state), then patches the object when the profile changes.
A phone gets a pass through a save link whose signed JWT names only the object ids, so the link
stays short and the content always comes from the API.

The builders are pure functions; :class:`GoogleWalletClient` is the only part that does I/O.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt
from google.auth import jwt as google_jwt

from services.wallet.applepass import PassContent, PassField
from services.wallet.templates import LANGUAGES, MAX_LOCATIONS, PassKind, PassTemplate

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
NOTIFY_ON_UPDATE = "NOTIFY_ON_UPDATE"
TEXT_AND_NOTIFY = "TEXT_AND_NOTIFY"

Resource = Literal["loyalty", "offer", "eventTicket"]
RESOURCES: tuple[Resource, ...] = ("loyalty", "offer", "eventTicket")
_RESOURCE_OF_KIND: Mapping[PassKind, Resource] = {
    PassKind.STORE_CARD: "loyalty",
    PassKind.COUPON: "offer",
    PassKind.EVENT_TICKET: "eventTicket",
}
_ISSUER_ID = re.compile(r"[0-9]+")
_ID_SUFFIX = re.compile(r"[A-Za-z0-9._-]+")
_DEFAULT_LANGUAGE = LANGUAGES[0]


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


def resource_for(kind: PassKind) -> Resource:
    """The Google Wallet pass type of a Lodestar pass kind."""
    resource = _RESOURCE_OF_KIND.get(kind)
    if resource is None:
        raise ValueError(
            f"Google Wallet passes of kind {kind.value!r} are not supported; issue a "
            f"{', '.join(k.value for k in _RESOURCE_OF_KIND)} instead"
        )
    return resource


def _check_resource(resource: str) -> Resource:
    for known in RESOURCES:
        if resource == known:
            return known
    raise ValueError(f"unknown Google Wallet resource {resource!r}; known: {', '.join(RESOURCES)}")


def _qualified(issuer_id: str, suffix: str) -> str:
    if not _ISSUER_ID.fullmatch(issuer_id):
        raise ValueError(f"issuer id {issuer_id!r} must be the digits Google assigned")
    if not _ID_SUFFIX.fullmatch(suffix):
        raise ValueError(f"id suffix {suffix!r} may contain only letters, digits, '.', '_' and '-'")
    return f"{issuer_id}.{suffix}"


def class_id(issuer_id: str, template_name: str, kind: PassKind) -> str:
    """The id of the class of a template's passes of one kind: ``<issuer>.<template>.<kind>``."""
    return _qualified(issuer_id, f"{template_name}.{kind.value}")


def object_id(issuer_id: str, serial_number: str) -> str:
    """The id of the object of one pass: ``<issuer>.<serial number>``."""
    return _qualified(issuer_id, serial_number)


def _check_id(value: str) -> str:
    issuer, dot, suffix = value.partition(".")
    if not dot:
        raise ValueError(f"Google Wallet id {value!r} must look like <issuerId>.<suffix>")
    return _qualified(issuer, suffix)


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
    if not objects:
        raise ValueError("a save link needs at least one object")
    payload: dict[str, list[dict[str, str]]] = {}
    for resource, named in objects:
        known = _check_resource(resource)
        payload.setdefault(f"{known}Objects", []).append({"id": _check_id(named)})
    return account.sign(
        {
            "iss": account.client_email,
            "aud": "google",
            "typ": "savetowallet",
            "iat": int(now),
            "origins": list(origins),
            "payload": payload,
        }
    )


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


def text_message(header: str, body: str, message_id: str, *, notify: bool = True) -> dict[str, Any]:
    """A pass message; ``TEXT_AND_NOTIFY`` also pushes a notification to the phone."""
    if not message_id:
        raise ValueError("a message needs an id (it makes redelivered messages recognisable)")
    return {
        "id": message_id,
        "header": header,
        "body": body,
        "messageType": TEXT_AND_NOTIFY if notify else "TEXT",
    }


class GoogleWalletClient:
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
        if not _ISSUER_ID.fullmatch(issuer_id):
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
        self._http = httpx.AsyncClient(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )
        self._token = ""
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        self._save_links: OrderedDict[_SaveLinkKey, tuple[str, float]] = OrderedDict()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

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
                response = await self._http.request(
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
        known = _check_resource(resource)
        checked = _check_id(str(body.get("id", "")))
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
        known = _check_resource(resource)
        object_id = _check_id(str(body.get("id", "")))
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
        known = _check_resource(resource)
        checked = _check_id(object_id)
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
        known = _check_resource(resource)
        checked = _check_id(object_id)
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
        known = _check_resource(resource)
        checked = _check_id(object_id)
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


# --- class and object bodies from the platform-neutral pass ---------------------------------


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def localized_string(text: str, strings: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A ``LocalizedString``: ``text`` translated through the pass strings when it is one of
    their keys (English by default, the other languages as translations), else ``text``."""
    default = strings.get(_DEFAULT_LANGUAGE, {}).get(text, text)
    doc: dict[str, Any] = {"defaultValue": {"language": _DEFAULT_LANGUAGE, "value": default}}
    translated = [
        {"language": language, "value": texts[text]}
        for language, texts in sorted(strings.items())
        if language != _DEFAULT_LANGUAGE and text in texts
    ]
    if translated:
        doc["translatedValues"] = translated
    return doc


def _is_key(text: str, strings: Mapping[str, Mapping[str, str]]) -> bool:
    return any(text in texts for texts in strings.values())


def _shown_value(item: PassField) -> str:
    if item.currency and isinstance(item.value, int | float):
        return f"{item.value:.2f} {item.currency}"
    if item.is_date:
        try:
            return datetime.fromisoformat(str(item.value)).date().isoformat()
        except ValueError:
            return str(item.value)
    return str(item.value)


def _text_module(item: PassField, strings: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A ``TextModuleData`` (id = the field key): the label as header, the value as body,
    both translated when they are keys of the pass strings."""
    header = localized_string(item.label or item.key, strings)
    module: dict[str, Any] = {
        "id": item.key,
        "header": header["defaultValue"]["value"],
        "localizedHeader": header,
        "body": _shown_value(item),
    }
    if isinstance(item.value, str) and _is_key(item.value, strings):
        body = localized_string(item.value, strings)
        module["body"] = body["defaultValue"]["value"]
        module["localizedBody"] = body
    return module


def _fields(content: PassContent) -> list[PassField]:
    return [
        *content.header,
        *content.primary,
        *content.secondary,
        *content.auxiliary,
        *content.back,
    ]


def _field(content: PassContent, key: str) -> PassField | None:
    return next((item for item in _fields(content) if item.key == key), None)


def _points(item: PassField, strings: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    label = localized_string(item.label or item.key, strings)
    return {
        "label": label["defaultValue"]["value"],
        "localizedLabel": label,
        "balance": {"int": int(item.value)},
    }


def _money_points(item: PassField, strings: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    if not item.currency:
        raise ValueError(f"field {item.key!r} is a money balance and needs a currency")
    label = localized_string(item.label or item.key, strings)
    # Decimal, so 12.3 becomes exactly 12300000 micros.
    micros = int(Decimal(str(item.value)) * 1_000_000)
    return {
        "label": label["defaultValue"]["value"],
        "localizedLabel": label,
        "balance": {"money": {"micros": str(micros), "currencyCode": item.currency}},
    }


# Fields that become structured slots of the class or object instead of text modules.
_STRUCTURED_KEYS: Mapping[PassKind, frozenset[str]] = {
    PassKind.STORE_CARD: frozenset({"points", "cashback"}),
    PassKind.COUPON: frozenset({"offer", "expires"}),
    PassKind.EVENT_TICKET: frozenset({"event", "venue"}),
}


def google_class(
    content: PassContent, template: PassTemplate, issuer_id: str, *, logo_uri: str = ""
) -> dict[str, Any]:
    """The class of the template's passes of ``content.kind``.

    A class is shared by every pass of the template and kind, so its background is the
    template's default-tier colour (per-pass colours go on objects that take one). A loyalty
    class needs ``logo_uri``, a public HTTPS image Google fetches (``programLogo``).
    """
    kind = content.kind
    resource_for(kind)
    strings = content.strings
    body: dict[str, Any] = {
        "id": class_id(issuer_id, template.name, kind),
        "issuerName": template.organization_name,
        "reviewStatus": "UNDER_REVIEW",
        "hexBackgroundColor": _hex(template.colours(template.default_tier).background),
        "multipleDevicesAndHoldersAllowedStatus": (
            "ONE_USER_ALL_DEVICES" if template.sharing_prohibited else "MULTIPLE_HOLDERS"
        ),
    }
    logo = {"sourceUri": {"uri": logo_uri}} if logo_uri else None
    if kind is PassKind.STORE_CARD:
        if logo is None:
            raise ValueError("a loyalty class needs logo_uri (Google requires programLogo)")
        body["programName"] = template.logo_text or template.organization_name
        body["programLogo"] = logo
    elif kind is PassKind.COUPON:
        offer = _field(content, "offer")
        title = localized_string(str(offer.value) if offer else content.description, strings)
        body["title"] = title["defaultValue"]["value"]
        body["localizedTitle"] = title
        body["provider"] = template.organization_name
        body["redemptionChannel"] = "BOTH"
        if logo is not None:
            body["titleImage"] = logo
    else:
        event = _field(content, "event")
        body["eventName"] = localized_string(
            str(event.value) if event else content.description, strings
        )
        venue = _field(content, "venue")
        venue_name = str(venue.value) if venue else ""
        if not venue_name and content.places:
            venue_name = content.places[0].relevant_text
        if venue_name:
            body["venue"] = {"name": localized_string(venue_name, strings)}
        if content.relevant_dates:
            body["dateTime"] = {
                "start": _aware(content.relevant_dates[0]).isoformat(timespec="seconds")
            }
        if logo is not None:
            body["logo"] = logo
    return body


def _aware(at: datetime) -> datetime:
    # MongoDB hands back naive datetimes; they are UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def object_state(content: PassContent, now: datetime) -> str:
    """ACTIVE, INACTIVE once voided, EXPIRED once past its expiration."""
    if content.voided:
        return "INACTIVE"
    if content.expiration is not None and _aware(content.expiration) <= _aware(now):
        return "EXPIRED"
    return "ACTIVE"


def google_object(
    content: PassContent, issuer_id: str, class_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The object of one pass: state, barcode, balances, texts and places."""
    kind = content.kind
    resource_for(kind)
    strings = content.strings
    body: dict[str, Any] = {
        "id": object_id(issuer_id, content.serial_number),
        "classId": _check_id(class_id),
        "state": object_state(content, now or datetime.now(UTC)),
        "barcode": {"type": "QR_CODE", "value": content.barcode_message},
    }
    structured = _STRUCTURED_KEYS[kind]
    if kind is PassKind.STORE_CARD:
        points = _field(content, "points")
        if points is not None:
            body["loyaltyPoints"] = _points(points, strings)
        cashback = _field(content, "cashback")
        if cashback is not None:
            body["secondaryLoyaltyPoints"] = _money_points(cashback, strings)
    if kind is PassKind.EVENT_TICKET:
        body["hexBackgroundColor"] = _hex(content.colours.background)
    if content.expiration is not None:
        body["validTimeInterval"] = {
            "end": {"date": _aware(content.expiration).isoformat(timespec="seconds")}
        }
    elif kind is PassKind.COUPON:
        structured = structured - {"expires"}  # no validTimeInterval shows it then
    modules = [
        _text_module(item, strings) for item in _fields(content) if item.key not in structured
    ]
    if modules:
        body["textModulesData"] = modules
    if content.places:
        body["merchantLocations"] = [
            {"latitude": place.latitude, "longitude": place.longitude}
            for place in content.places[:MAX_LOCATIONS]
        ]
    return body
