"""Credentials of the gateway's two doors: the ingest write key and the GraphQL API key
(verified by :mod:`gateway.keys`)."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.datastructures import Headers


def write_key_from(headers: Headers) -> str | None:
    """The write key sent as the HTTP Basic username (the password is empty), if any."""
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, _, _ = decoded.partition(":")
    return username or None


def bearer_token_from(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    return bearer_token(headers.get("authorization", ""))


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak the key."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(value: str) -> str | None:
    """The token of an ``Authorization`` value ``Bearer <token>``, if it is one."""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
