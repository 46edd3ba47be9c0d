"""Apple's PassKit web service (the pass's ``webServiceURL``), under ``/v1/``:

- ``POST /v1/devices/{device}/registrations/{passType}/{serial}`` register (201 new, 200 known)
- ``DELETE`` the same path: unregister (200)
- ``GET /v1/devices/{device}/registrations/{passType}?passesUpdatedSince=TAG``: 200 with
  ``serialNumbers`` and ``lastUpdated``, or 204 when nothing changed
- ``GET /v1/passes/{passType}/{serial}``: the latest ``.pkpass``, 304 on ``If-Modified-Since``
- ``POST /v1/log``: messages phones report
- ``GET /downloads/{serial}?expires=…&sig=…``: a pass by signed link
  (:mod:`services.wallet.downloads` makes and checks the links)

Pass-specific calls need ``Authorization: ApplePass <token>`` (or ``AndroidPass <token>``),
checked in constant time; anything else is 401. Bad input is 400 with a JSON ``error`` naming
it (:mod:`services.wallet.webinput`); a body over 64 KB is 413 as soon as that is known, and
the rest of it is not read. Device logs reach the service log redacted
(:mod:`services.wallet.devicelogs`).

A new registration and an unregistration are reported as ``Wallet Pass Installed`` /
``Wallet Pass Removed`` events; when the event bus is down the call answers 503 and the
registration is left as it was, so the phone's retry reports it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.platform.health import DependencyHealth
from services.wallet.applepass import PKPASS_MEDIA_TYPE
from services.wallet.devicelogs import log_fields
from services.wallet.downloads import PATH, SERIAL, DownloadLinks
from services.wallet.images import solid_png
from services.wallet.passes import APPLE, WalletPasses
from services.wallet.records import StoredPass
from services.wallet.templates import DEFAULT_TEMPLATE
from services.wallet.webinput import (
    MAX_DATE_HEADER,
    InputProblem,
    check_declared_length,
    json_object,
    pass_token,
    path_problem,
    read_capped,
    updated_since_tag,
)

log = logging.getLogger(__name__)

_PUSH_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,256}")


def _bad(message: str) -> JSONResponse:
    return _refused(InputProblem(message))


def _refused(problem: InputProblem) -> JSONResponse:
    # Client errors are INFO; the messages are fixed texts that never repeat the input.
    log.info(
        "passkit request refused",
        extra={"fields": {"status": problem.status, "problem": problem.message}},
    )
    # A refused body may still be arriving: close the connection rather than drain it.
    headers = {"Connection": "close"} if problem.status == 413 else None
    return JSONResponse({"error": problem.message}, status_code=problem.status, headers=headers)


def _unavailable() -> JSONResponse:
    return JSONResponse(
        {"error": "the event bus is unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


class Feedback(Protocol):
    """Where installs and removals are reported (:class:`services.wallet.feedback`)."""

    async def installed(self, doc: StoredPass, device_id: str) -> None:
        """A phone registered for the pass."""
        ...

    async def removed(self, doc: StoredPass, device_id: str, reason: str = "") -> None:
        """A phone unregistered."""
        ...


def _unauthorized() -> JSONResponse:
    return JSONResponse({"error": "missing or wrong pass authentication token"}, status_code=401)


async def _json_body(request: Request) -> dict[str, object]:
    """The request's body as a JSON object, read as a capped stream."""
    try:
        body = await read_capped(request.headers.get("content-length"), request.stream())
    except ClientDisconnect:
        raise InputProblem("the client went away before the body arrived") from None
    return json_object(body)


def _push_token(body: Mapping[str, object]) -> str:
    push_token = body.get("pushToken")
    if not isinstance(push_token, str) or not _PUSH_TOKEN.fullmatch(push_token):
        raise InputProblem("pushToken must be a string of 1 to 256 letters, digits or ._:-")
    return push_token


def _download_refused(status: int, message: str) -> JSONResponse:
    # Client errors are INFO; the message is fixed and never repeats the request.
    log.info("pass download refused", extra={"fields": {"status": status}})
    return JSONResponse({"error": message}, status_code=status)


_DOWNLOAD_MESSAGES = {
    403: "this download link is not valid",
    404: "no such pass",
    410: "this download link has expired; ask for a new one",
}


class PassDownloads:
    """The HTTP handler of download links."""

    def __init__(self, passes: WalletPasses, links: DownloadLinks) -> None:
        self.passes = passes
        self.links = links

    async def download(self, request: Request) -> Response:
        """The ``.pkpass`` a valid, unexpired link names."""
        serial = request.path_params["serialNumber"]
        if not SERIAL.fullmatch(serial):
            return _download_refused(404, _DOWNLOAD_MESSAGES[404])
        status = self.links.problem(
            serial, request.query_params.get("expires", ""), request.query_params.get("sig", "")
        )
        if status is not None:
            return _download_refused(status, _DOWNLOAD_MESSAGES[status])
        doc = await self.passes.find(serial)
        if doc is None or doc.get("platform", APPLE) != APPLE:
            return _download_refused(404, _DOWNLOAD_MESSAGES[404])
        if doc.get("voided"):
            return _download_refused(410, "this pass was voided")
        body = await asyncio.to_thread(self.passes.render, doc)
        return Response(
            body,
            media_type=PKPASS_MEDIA_TYPE,
            headers={
                "Content-Disposition": 'attachment; filename="pass.pkpass"',
                # The link is a bearer credential: no cache may keep the pass.
                "Cache-Control": "no-store",
            },
        )


class PassKitWebService:
    """The HTTP handlers; ``app`` is the Starlette application."""

    def __init__(
        self,
        passes: WalletPasses,
        feedback: Feedback | None = None,
        downloads: PassDownloads | None = None,
        health: DependencyHealth | None = None,
    ) -> None:
        self.passes = passes
        self.feedback = feedback
        self.health = health
        self.app = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route(
                    "/v1/devices/{deviceLibraryIdentifier}/registrations/{passTypeIdentifier}"
                    "/{serialNumber}",
                    self.registration,
                    methods=["POST", "DELETE"],
                ),
                Route(
                    "/v1/devices/{deviceLibraryIdentifier}/registrations/{passTypeIdentifier}",
                    self.updated_serials,
                    methods=["GET"],
                ),
                Route(
                    "/v1/passes/{passTypeIdentifier}/{serialNumber}",
                    self.latest_pass,
                    methods=["GET"],
                ),
                Route("/v1/log", self.log, methods=["POST"]),
                Route("/images/logo.png", self.logo, methods=["GET"]),
                *([Route(PATH, downloads.download, methods=["GET"])] if downloads else []),
            ]
        )

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process serves HTTP (whatever its dependencies do)."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the process serves HTTP and MongoDB and Kafka answer (503 when not);
        the body names each dependency's state, APNs and Google included."""
        if self.health is None:
            return JSONResponse({"status": "ok", "dependencies": {}})
        return JSONResponse(self.health.detail(), status_code=200 if self.health.ready else 503)

    async def _authorized_pass(self, request: Request) -> StoredPass | None:
        """The pass the path names when the header carries its token, else None."""
        token = pass_token(request.headers.get("authorization"))
        if not token:
            return None
        params = request.path_params
        doc = await self.passes.find(params["serialNumber"])
        # Compare even for an unknown pass so timing tells nothing about which serials exist.
        expected = doc["authentication_token"] if doc else "x" * 43
        matches = hmac.compare_digest(token.encode(), expected.encode())
        if doc is None or not matches or doc["pass_type_id"] != params["passTypeIdentifier"]:
            return None
        return doc

    async def registration(self, request: Request) -> Response:
        """Register (POST, body ``{"pushToken": ...}``) or unregister (DELETE) a device."""
        params = request.path_params
        problem = path_problem(params)
        if problem:
            return _bad(problem)
        try:
            if request.method == "POST":
                # Refuse a body announced too large before anything else, so it is never read.
                check_declared_length(request.headers.get("content-length"))
        except InputProblem as refused:
            return _refused(refused)
        doc = await self._authorized_pass(request)
        if doc is None:
            return _unauthorized()
        if request.method == "DELETE":
            return await self._unregister(
                doc, params["deviceLibraryIdentifier"], params["passTypeIdentifier"]
            )
        return await self._register(request, doc)

    async def _register(self, request: Request, doc: StoredPass) -> Response:
        device, pass_type, serial = (
            request.path_params["deviceLibraryIdentifier"],
            request.path_params["passTypeIdentifier"],
            request.path_params["serialNumber"],
        )
        try:
            push_token = _push_token(await _json_body(request))
        except InputProblem as refused:
            return _refused(refused)
        created = await self.passes.register(
            device, pass_type, serial, push_token, datetime.now(UTC)
        )
        if created and self.feedback is not None:
            try:
                await self.feedback.installed(doc, device)
            except Exception:
                log.exception("reporting an installed pass failed")
                await self.passes.unregister(device, pass_type, serial)
                return _unavailable()
        return Response(status_code=201 if created else 200)

    async def _unregister(self, doc: StoredPass, device: str, pass_type: str) -> Response:
        known = await self.passes.registrations_of(doc["_id"])
        if self.feedback is not None and any(r["device_id"] == device for r in known):
            try:
                await self.feedback.removed(doc, device, "unregistered")
            except Exception:
                log.exception("reporting a removed pass failed")
                return _unavailable()
        await self.passes.unregister(device, pass_type, doc["_id"])
        return Response(status_code=200)

    async def updated_serials(self, request: Request) -> Response:
        """Serial numbers of the device's passes changed since the ``passesUpdatedSince`` tag."""
        params = request.path_params
        problem = path_problem(params)
        if problem:
            return _bad(problem)
        try:
            since = updated_since_tag(request.query_params.get("passesUpdatedSince"))
        except InputProblem as refused:
            return _refused(refused)
        serials, last = await self.passes.updated_since(
            params["deviceLibraryIdentifier"], params["passTypeIdentifier"], since
        )
        if not serials:
            return Response(status_code=204)
        return JSONResponse({"serialNumbers": serials, "lastUpdated": str(last)})

    async def latest_pass(self, request: Request) -> Response:
        """The pass as it is now, or 304 when it has not changed since ``If-Modified-Since``."""
        problem = path_problem(request.path_params)
        if problem:
            return _bad(problem)
        doc = await self._authorized_pass(request)
        if doc is None:
            return _unauthorized()
        updated_at: datetime = doc["updated_at"].astimezone(UTC)
        headers = {"Last-Modified": format_datetime(updated_at, usegmt=True)}
        since = request.headers.get("if-modified-since")
        if since and len(since) <= MAX_DATE_HEADER:
            try:
                since_at = parsedate_to_datetime(since)
            except (TypeError, ValueError, OverflowError):
                since_at = None  # an unparsable date is ignored, as HTTP says
            if since_at is not None and since_at.tzinfo and updated_at <= since_at:
                return Response(status_code=304, headers=headers)
        body = await asyncio.to_thread(self.passes.render, doc)
        return Response(body, media_type=PKPASS_MEDIA_TYPE, headers=headers)

    async def logo(self, request: Request) -> Response:
        """The programme logo Google Wallet shows on loyalty cards (it fetches it by URL)."""
        colours = DEFAULT_TEMPLATE.colours(DEFAULT_TEMPLATE.default_tier)
        return Response(solid_png(660, 660, colours.background), media_type="image/png")

    async def log(self, request: Request) -> Response:
        """Phones report problems with a pass here; they reach the service log redacted."""
        try:
            body = await _json_body(request)
        except InputProblem as refused:
            return _refused(refused)
        logs = body.get("logs")
        if not isinstance(logs, list) or not all(isinstance(m, str) for m in logs):
            return _bad("logs must be a list of strings")
        log.info("passkit device logs", extra={"fields": log_fields(logs)})
        return Response(status_code=200)
