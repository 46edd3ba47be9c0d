"""What reaches the PassKit web service, checked before it is used: bodies read as a capped
stream, JSON bounded in nesting and number size, path and query parameters and the
authentication header of bounded length in plain ASCII. Every refusal names what is wrong
without repeating it."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping

from services.platform.validation import json_nesting_exceeds

MAX_BODY = 64 * 1024
MAX_DEPTH = 16
MAX_NUMBER_DIGITS = 20
MAX_TOKEN = 256
MAX_TAG = 2**63 - 1
MAX_PASS_TYPE = 255
MAX_DATE_HEADER = 64

_DEVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PASS_TYPE = re.compile(r"pass(?:\.[A-Za-z0-9-]+)+")
_SERIAL = re.compile(r"[A-Za-z0-9._-]{1,128}")
_TAG = re.compile(r"[0-9]{1,19}")
# Strings (closed or not) are skipped whole, so brackets inside them do not count.
_SCHEMES = ("ApplePass ", "AndroidPass ")


class InputProblem(Exception):
    """Input the web service refuses: ``status`` 400 (malformed) or 413 (too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def too_large() -> InputProblem:
    """The refusal of a body over :data:`MAX_BODY`."""
    return InputProblem(f"body larger than {MAX_BODY} bytes", 413)


def check_declared_length(declared_length: str | None, cap: int = MAX_BODY) -> None:
    """Refuse a ``Content-Length`` over ``cap`` before any of the body is read."""
    if declared_length is None:
        return
    declared = declared_length.strip()
    if not (declared.isascii() and declared.isdigit()):
        raise InputProblem("Content-Length is not a number")
    digits = declared.lstrip("0") or "0"
    if len(digits) > len(str(cap)) or int(digits) > cap:
        raise too_large()


async def read_capped(
    declared_length: str | None, chunks: AsyncIterator[bytes], cap: int = MAX_BODY
) -> bytes:
    """The body from ``chunks``, refused as soon as it (or its declared length) passes
    ``cap``: the rest is never read."""
    check_declared_length(declared_length, cap)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > cap:
            raise too_large()
    return bytes(body)


class _NumberTooLong(Exception):
    pass


def _bounded_int(digits: str) -> int:
    # int() of thousands of digits is slow or refused; no field here needs more than 20.
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong
    return int(digits)


def json_object(body: bytes) -> dict[str, object]:
    """``body`` as a JSON object, or :class:`InputProblem` naming why it is not one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputProblem("body is not UTF-8 JSON") from None
    if json_nesting_exceeds(text, MAX_DEPTH):
        raise InputProblem(f"body JSON is nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, parse_int=_bounded_int)
    except _NumberTooLong:
        raise InputProblem(
            f"a number in the body has more than {MAX_NUMBER_DIGITS} digits"
        ) from None
    except json.JSONDecodeError as exc:
        raise InputProblem(f"body is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise InputProblem("body must be a JSON object")
    return value


def path_problem(params: Mapping[str, str]) -> str | None:
    """What is wrong with the web service's path parameters, or None."""
    device = params.get("deviceLibraryIdentifier")
    if device is not None and not _DEVICE.fullmatch(device):
        return "deviceLibraryIdentifier must be 1 to 128 letters, digits or ._-"
    pass_type = params.get("passTypeIdentifier")
    if pass_type is not None and (
        len(pass_type) > MAX_PASS_TYPE or not _PASS_TYPE.fullmatch(pass_type)
    ):
        return (
            f"passTypeIdentifier must be pass.<reverse domain> of at most {MAX_PASS_TYPE} "
            "letters, digits, '.' or '-'"
        )
    serial = params.get("serialNumber")
    if serial is not None and not _SERIAL.fullmatch(serial):
        return "serialNumber must be 1 to 128 letters, digits or ._-"
    return None


def updated_since_tag(raw: str | None) -> int | None:
    """The ``passesUpdatedSince`` tag (None when absent): ASCII digits within int64."""
    if raw is None:
        return None
    if not _TAG.fullmatch(raw) or int(raw) > MAX_TAG:
        raise InputProblem(
            "passesUpdatedSince must be a tag this service returned "
            f"(ASCII digits, at most {MAX_TAG})"
        )
    return int(raw)


def pass_token(authorization: str | None) -> str | None:
    """The token of an ``ApplePass`` / ``AndroidPass`` header; None when there is none or it
    is too long to be one this service issued."""
    header = authorization or ""
    for scheme in _SCHEMES:
        if header.startswith(scheme):
            token = header[len(scheme) :].strip()
            return token if 0 < len(token) <= MAX_TOKEN else None
    return None
