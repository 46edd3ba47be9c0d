"""A loopback STAND-IN for Apple's Push Notification service, for ``make run`` and the tests.

It is not Apple and delivers nothing to any phone. It speaks the part of the APNs provider API
the wallet uses, the way APNs does, so the production client
(``services/wallet/clients/apns.py``) runs unchanged against it: TLS with HTTP/2 only
(Hypercorn, ALPN ``h2``), ``POST /3/device/{token}`` with an ES256 provider token
(``authorization: bearer <JWT>``, checked against one auth key's public half, key id and team
id; older than an hour is ``ExpiredProviderToken``), ``apns-topic`` (allowed topics, or any
``pass.`` topic when none are configured), ``apns-push-type`` and ``apns-priority`` (background
pushes must be priority 5), a JSON dictionary of at most 4 KiB. Success is 200 with an
``apns-id`` header; errors are ``{"reason": ...}`` with APNs's status codes and reasons (410
adds ``timestamp`` in milliseconds). The one reason of its own is ``HTTP2Required`` (400), for
requests over HTTP/1.1, which real APNs never accepts.

Control endpoints (HTTP/1.1 or 2) let tests script answers and read what was pushed:

- ``GET /fake/pushes[?device_token=T][&since=INDEX]`` every push received, with the answer given
- ``DELETE /fake/pushes`` forget them (indexes keep counting up)
- ``POST /fake/responses`` ``{"status": 429, "reason": "...", "count": N, "device_token": T}``:
  the next N matching valid pushes get that answer instead of 200
- ``POST /fake/unregistered`` ``{"device_token": T}``: 410 ``Unregistered`` for T from now on
- ``DELETE /fake/responses`` drop scripted answers and unregistered tokens

Run in-process with :class:`FakeApns`, or as a process until SIGTERM/SIGINT::

    python -m infra.local.fake_apns --port 8443 --cert server.pem --key server-key.pem \\
        --auth-key-public AuthKey_K.public.pem --key-id K --team-id T [--topic pass.x] [--log F]

``infra/local/devapns.py`` makes the throwaway CA, TLS certificate and auth key it needs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.local.devapns import ApnsDevFiles
from infra.local.standin import (
    CallLog,
    bind_loopback,
    received_at,
    serve_until_signalled,
    since_index,
)
from services.platform.commandline import CommandParser, parse_command
from services.platform.logs import configure_logging

log = logging.getLogger(__name__)

STAND_IN_LABEL = "Lodestar loopback APNs stand-in - not Apple, delivers nothing"
PROG = "python -m infra.local.fake_apns"
MAX_PAYLOAD = 4096
TOKEN_MAX_AGE_S = 3600
STOP_GRACE_S = 1.0
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_UUID = re.compile(r"^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")
_PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "complication",
        "controls",
        "fileprovider",
        "liveactivity",
        "location",
        "mdm",
        "pushtotalk",
        "voip",
        "widgets",
    }
)
_PRIORITIES = frozenset({"1", "5", "10"})
_DEFAULT_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


class _Refused(Exception):
    """The answer to a push that is not 200."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(segment: str) -> dict[str, Any]:
    value = json.loads(_unb64(segment))
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value


@dataclass(frozen=True)
class TokenSummary:
    """What the stand-in records of a provider token: never the token itself."""

    kid: str | None
    iat: int | None
    fingerprint: str

    @classmethod
    def of(cls, authorization: str | None) -> TokenSummary:
        """Read ``kid`` and ``iat`` without verifying; the fingerprint tells tokens apart."""
        token = (authorization or "").partition(" ")[2].strip()
        if not token:
            return cls(None, None, "")
        fingerprint = hashlib.sha256(token.encode()).hexdigest()[:16]
        try:
            header_segment, claims_segment, _ = token.split(".")
            kid = _json_object(header_segment).get("kid")
            iat = _json_object(claims_segment).get("iat")
        except (ValueError, TypeError):
            return cls(None, None, fingerprint)
        return cls(
            kid if isinstance(kid, str) else None,
            iat if isinstance(iat, int) else None,
            fingerprint,
        )


class ProviderTokenCheck:
    """Checks ``authorization: bearer <JWT>`` the way APNs does for one auth key."""

    def __init__(
        self,
        public_key: ec.EllipticCurvePublicKey,
        key_id: str,
        team_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.public_key = public_key
        self.key_id = key_id
        self.team_id = team_id
        self.clock = clock

    def check(self, authorization: str | None) -> None:
        """Return when the token is good; raise :class:`_Refused` with APNs's answer."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(403, "MissingProviderToken")
        invalid = _Refused(403, "InvalidProviderToken")
        try:
            header_segment, claims_segment, signature_segment = token.strip().split(".")
            header = _json_object(header_segment)
            claims = _json_object(claims_segment)
            signature = _unb64(signature_segment)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise invalid from exc
        if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
            raise invalid
        if claims.get("iss") != self.team_id or len(signature) != 64:
            raise invalid
        # JWS carries ECDSA signatures as raw r||s; cryptography verifies DER.
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            self.public_key.verify(
                der, f"{header_segment}.{claims_segment}".encode(), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature as exc:
            raise invalid from exc
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int) or isinstance(issued_at, bool):
            raise invalid
        if self.clock() - issued_at > TOKEN_MAX_AGE_S:
            raise _Refused(403, "ExpiredProviderToken")


@dataclass(frozen=True)
class ReceivedPush:
    """One push the stand-in received and what it answered."""

    index: int
    received_at: str
    device_token: str
    topic: str | None
    push_type: str | None
    priority: str | None
    apns_id: str
    status: int
    reason: str
    http_version: str
    # host:port of the client's end: one value per TCP connection.
    connection: str
    client_port: int | None
    jwt_kid: str | None
    jwt_iat: int | None
    jwt_fingerprint: str
    payload: Any


@dataclass
class ScriptedAnswer:
    """An answer the next ``remaining`` matching pushes get instead of 200."""

    status: int
    reason: str
    remaining: int
    device_token: str | None = None


async def _read_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PAYLOAD:
            break
    return body


def _payload(body: bytes) -> Any:
    if len(body) > MAX_PAYLOAD:
        raise _Refused(413, "PayloadTooLarge")
    if not body:
        raise _Refused(400, "PayloadEmpty")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(400, "BadPayload") from exc
    if not isinstance(payload, dict):
        raise _Refused(400, "BadPayload")
    return payload


def _scripted_answer(spec: Any) -> dict[str, Any]:
    """The arguments of :meth:`ApnsStandIn.script` in a ``POST /fake/responses`` body."""
    if not isinstance(spec, dict):
        raise TypeError("expected a JSON object")
    status, count = spec["status"], spec.get("count", 1)
    reason, device_token = spec.get("reason", ""), spec.get("device_token")
    if not (isinstance(status, int) and isinstance(count, int)):
        raise TypeError("status and count must be integers")
    if not isinstance(reason, str) or not isinstance(device_token, str | None):
        raise TypeError("reason and device_token must be strings")
    return {"status": status, "reason": reason, "count": count, "device_token": device_token}


def _control_error(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


class ApnsStandIn:
    """The stand-in's ASGI app and state: checks pushes, answers them, records them."""

    def __init__(
        self,
        tokens: ProviderTokenCheck,
        topics: Iterable[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.tokens = tokens
        self.topics = frozenset(topics)
        self.unregistered: set[str] = set()
        self.scripted: list[ScriptedAnswer] = []
        self.log: CallLog[ReceivedPush] = CallLog(asdict, log_path)
        self.app = Starlette(
            routes=[
                Route(
                    "/3/device/{device_token}",
                    self._push,
                    methods=["POST", "GET", "PUT", "PATCH", "DELETE"],
                ),
                Route("/fake/pushes", self._list_pushes, methods=["GET"]),
                Route("/fake/pushes", self._clear_pushes, methods=["DELETE"]),
                Route("/fake/responses", self._script, methods=["POST"]),
                Route("/fake/responses", self._clear_responses, methods=["DELETE"]),
                Route("/fake/unregistered", self._unregister, methods=["POST"]),
            ],
            exception_handlers={404: self._not_found},
        )

    @property
    def log_path(self) -> Path | None:
        """The file every push is appended to as a JSON line, if any."""
        return self.log.log_path

    @property
    def pushes(self) -> list[ReceivedPush]:
        """Every push received since the last clear, oldest first."""
        return self.log.entries

    def script(
        self, status: int, reason: str = "", count: int = 1, device_token: str | None = None
    ) -> None:
        """Answer the next ``count`` valid pushes (to ``device_token``, or any) with
        ``status``/``reason`` instead of 200."""
        if not 400 <= status <= 599 or count < 1:
            raise ValueError("status must be 4xx or 5xx and count at least 1")
        reason = reason or _DEFAULT_REASONS.get(status, "Error")
        self.scripted.append(ScriptedAnswer(status, reason, count, device_token))

    def clear_scripted(self) -> None:
        """Drop the scripted answers not yet given: pushes get 200 again (an outage ends)."""
        self.scripted.clear()

    def unregister(self, device_token: str) -> None:
        """Answer 410 ``Unregistered`` to every later push to ``device_token``."""
        self.unregistered.add(device_token)

    def _take_scripted(self, device_token: str) -> ScriptedAnswer | None:
        for answer in self.scripted:
            if answer.device_token in (None, device_token):
                answer.remaining -= 1
                if answer.remaining == 0:
                    self.scripted.remove(answer)
                return answer
        return None

    def _judge(self, request: Request, device_token: str, body: bytes) -> Any:
        """The payload of a push APNs would accept; raise :class:`_Refused` otherwise."""
        if request.method != "POST":
            raise _Refused(405, "MethodNotAllowed")
        if request.scope.get("http_version") != "2":
            raise _Refused(400, "HTTP2Required")
        self.tokens.check(request.headers.get("authorization"))
        topic = request.headers.get("apns-topic")
        if not topic:
            raise _Refused(400, "MissingTopic")
        if not (topic in self.topics if self.topics else topic.startswith("pass.")):
            raise _Refused(400, "TopicDisallowed")
        if not _HEX.match(device_token):
            raise _Refused(400, "BadDeviceToken")
        push_type = request.headers.get("apns-push-type", "")
        if push_type and push_type not in _PUSH_TYPES:
            raise _Refused(400, "InvalidPushType")
        # APNs's default priority is 10, which it refuses for background pushes.
        priority = request.headers.get("apns-priority", "10")
        if priority not in _PRIORITIES or (push_type == "background" and priority == "10"):
            raise _Refused(400, "BadPriority")
        apns_id = request.headers.get("apns-id")
        if apns_id is not None and not _UUID.match(apns_id):
            raise _Refused(400, "BadMessageId")
        payload = _payload(body)
        if device_token in self.unregistered:
            raise _Refused(410, "Unregistered")
        scripted = self._take_scripted(device_token)
        if scripted is not None:
            raise _Refused(scripted.status, scripted.reason)
        return payload

    async def _push(self, request: Request) -> Response:
        device_token = request.path_params["device_token"]
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4()).upper()
        body = await _read_body(request)
        status, reason, payload = 200, "", None
        try:
            payload = self._judge(request, device_token, body)
        except _Refused as refusal:
            status, reason = refusal.status, refusal.reason
        self._record(
            request, device_token, apns_id=apns_id, status=status, reason=reason, payload=payload
        )
        headers = {"apns-id": apns_id}
        if status == 200:
            return Response(status_code=200, headers=headers)
        content: dict[str, Any] = {"reason": reason}
        if status == 410:
            content["timestamp"] = int(time.time() * 1000)
        return JSONResponse(content, status_code=status, headers=headers)

    def _record(
        self,
        request: Request,
        device_token: str,
        *,
        apns_id: str,
        status: int,
        reason: str,
        payload: Any,
    ) -> None:
        token = TokenSummary.of(request.headers.get("authorization"))
        client = request.client
        self.log.add(
            lambda index: ReceivedPush(
                index=index,
                received_at=received_at(),
                device_token=device_token,
                topic=request.headers.get("apns-topic"),
                push_type=request.headers.get("apns-push-type"),
                priority=request.headers.get("apns-priority"),
                apns_id=apns_id,
                status=status,
                reason=reason,
                http_version=str(request.scope.get("http_version", "")),
                connection=f"{client.host}:{client.port}" if client else "",
                client_port=client.port if client else None,
                jwt_kid=token.kid,
                jwt_iat=token.iat,
                jwt_fingerprint=token.fingerprint,
                payload=payload,
            )
        )

    async def _list_pushes(self, request: Request) -> Response:
        token = request.query_params.get("device_token")
        since = since_index(request)
        if since is None:
            return _control_error("since must be an integer index")
        pushes = [
            asdict(p)
            for p in self.pushes
            if p.index >= since and (token is None or p.device_token == token)
        ]
        return JSONResponse(
            {
                "stand_in": True,
                "service": STAND_IN_LABEL,
                "next_index": self.log.next_index,
                "count": len(pushes),
                "pushes": pushes,
            }
        )

    async def _clear_pushes(self, _: Request) -> Response:
        cleared = self.log.clear()
        return JSONResponse({"stand_in": True, "cleared": cleared})

    async def _script(self, request: Request) -> Response:
        try:
            self.script(**_scripted_answer(json.loads(await request.body())))
        except (ValueError, TypeError, KeyError) as exc:
            return _control_error(f"bad scripted answer: {exc}")
        return JSONResponse({"stand_in": True, "scripted": len(self.scripted)}, status_code=201)

    async def _clear_responses(self, _: Request) -> Response:
        self.clear_scripted()
        self.unregistered.clear()
        return JSONResponse({"stand_in": True})

    async def _unregister(self, request: Request) -> Response:
        try:
            device_token = json.loads(await request.body())["device_token"]
        except (ValueError, TypeError, KeyError):
            return _control_error('expected {"device_token": "..."}')
        if not isinstance(device_token, str):
            return _control_error("device_token must be a string")
        self.unregister(device_token)
        return JSONResponse({"stand_in": True, "unregistered": sorted(self.unregistered)})

    async def _not_found(self, _: Request, __: Exception) -> Response:
        return JSONResponse({"reason": "BadPath"}, status_code=404)


def _load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise TypeError(f"{path} is not an EC public key (APNs auth keys are P-256)")
    return key


class FakeApns:
    """The stand-in served over TLS with HTTP/2 on ``host:port`` (0: a free port) until
    :meth:`stop`."""

    def __init__(
        self,
        *,
        cert: Path,
        key: Path,
        auth_key_public: Path,
        key_id: str,
        team_id: str,
        topics: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.cert = cert
        self.key = key
        self.host = host
        self.port = port
        checker = ProviderTokenCheck(_load_public_key(auth_key_public), key_id, team_id)
        self.stand_in = ApnsStandIn(checker, topics, log_path)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_dev_files(
        cls,
        files: ApnsDevFiles,
        *,
        topics: Iterable[str] = (),
        port: int = 0,
        log_path: Path | None = None,
    ) -> FakeApns:
        """The stand-in for the credentials ``ensure_apns_dev_files`` made."""
        return cls(
            cert=files.server_certificate,
            key=files.server_key,
            auth_key_public=files.auth_key_public,
            key_id=files.key_id,
            team_id=files.team_id,
            topics=topics,
            port=port,
            log_path=log_path,
        )

    @property
    def url(self) -> str:
        """The base URL to give the APNs client."""
        return f"https://{self.host}:{self.port}"

    @property
    def received(self) -> list[ReceivedPush]:
        """Every push received so far (since the last clear), oldest first."""
        return list(self.stand_in.pushes)

    async def start(self, timeout_s: float = 10.0) -> None:
        """Bind, serve, and return once connections are accepted; raise when the TLS files
        are unusable or the port is taken."""
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"unusable TLS files {self.cert}, {self.key}: {exc}") from exc
        # Bound here, not by Hypercorn, so port 0 gives a port we know before serving.
        sock = bind_loopback(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.certfile = str(self.cert)
        config.keyfile = str(self.key)
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = STOP_GRACE_S
        # APNs keeps idle connections open; closing them here would make clients reconnect.
        config.keep_alive_timeout = 3600
        self._stopping.clear()
        self._task = asyncio.create_task(
            serve(
                cast("ASGIFramework", self.stand_in.app),
                config,
                shutdown_trigger=self._stopping.wait,
            ),
            name="fake-apns",
        )
        await self._wait_until_listening(timeout_s)
        log.warning(
            "%s listening on %s",
            STAND_IN_LABEL,
            self.url,
            extra={"fields": {"stand_in": True, "url": self.url}},
        )

    async def _wait_until_listening(self, timeout_s: float) -> None:
        assert self._task is not None
        async with asyncio.timeout(timeout_s):
            while True:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("the APNs stand-in stopped while starting")
                try:
                    _, writer = await asyncio.open_connection(self.host, self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        """Stop serving; in-flight requests get :data:`STOP_GRACE_S`. Close clients first:
        an idle httpx client never answers the TLS close, and Hypercorn then waits for the
        event loop's TLS shutdown timeout (30 s by default; the command line shortens it)."""
        if self._task is None:
            return
        self._stopping.set()
        task, self._task = self._task, None
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_S + 1)
        if not done:
            log.warning(
                "APNs stand-in: waiting for clients that do not answer the TLS close",
                extra={"fields": {"stand_in": True}},
            )
            await task


def _parser() -> CommandParser:
    parser = CommandParser(prog=PROG, description=f"{STAND_IN_LABEL}. Runs until SIGTERM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cert", type=Path, required=True, help="TLS certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="TLS private key (PEM)")
    parser.add_argument(
        "--auth-key-public", type=Path, required=True, help="the auth key's public half (PEM)"
    )
    parser.add_argument("--key-id", required=True, help="the auth key's id (JWT kid)")
    parser.add_argument("--team-id", required=True, help="the team id (JWT iss)")
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        help="an allowed apns-topic (repeatable; none: any pass.* topic)",
    )
    parser.add_argument("--log", type=Path, help="append every push as a JSON line to FILE")
    return parser


class _StandInLoop(asyncio.SelectorEventLoop):
    """The command line's event loop: its TLS servers wait :data:`STOP_GRACE_S`, not 30 s,
    for a client's answer to the TLS close. Idle httpx clients never answer (they read only
    while a request is in flight), so SIGTERM would otherwise take 30 s per stuck connection
    (Hypercorn issue #202)."""

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        """Create the server with the short TLS shutdown timeout."""
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_shutdown_timeout", STOP_GRACE_S)
        return await super().create_server(*args, **kwargs)


def _note_unanswered_tls_close(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Hypercorn lets the timeout above escape as an "unhandled" traceback; it is expected.
    if isinstance(context.get("exception"), TimeoutError):
        log.info(
            "APNs stand-in: dropped a client that did not answer the TLS close",
            extra={"fields": {"stand_in": True}},
        )
        return
    loop.default_exception_handler(context)


async def _serve_until_signalled(fake: FakeApns) -> None:
    asyncio.get_running_loop().set_exception_handler(_note_unanswered_tls_close)
    await serve_until_signalled(
        fake.start,
        fake.stop,
        lambda: log.info("stopping the APNs stand-in", extra={"fields": {"stand_in": True}}),
    )


def main(argv: Sequence[str]) -> int:
    """Serve the stand-in until SIGTERM/SIGINT; 0 after a clean stop, 2 on bad arguments,
    1 when it cannot start."""
    arguments = parse_command(_parser(), argv, PROG)
    if isinstance(arguments, int):
        return arguments
    configure_logging("fake-apns")
    try:
        fake = FakeApns(
            cert=arguments.cert,
            key=arguments.key,
            auth_key_public=arguments.auth_key_public,
            key_id=arguments.key_id,
            team_id=arguments.team_id,
            topics=arguments.topic,
            host=arguments.host,
            port=arguments.port,
            log_path=arguments.log,
        )
        with asyncio.Runner(loop_factory=_StandInLoop) as runner:
            runner.run(_serve_until_signalled(fake))
    except (OSError, ValueError, TypeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
