"""Reading an ingest request's body with a cap, inflating it when the SDK gzipped it.

The cap holds for the body as the API reads it, so a gzipped body is capped once inflated:
inflation stops at the first byte past the cap, and a small "zip bomb" costs no more than
an honest body of the cap's size.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

# Content-Encoding values meaning "as is".
_IDENTITY = frozenset({"", "identity"})
_GZIP = frozenset({"gzip", "x-gzip"})
# Header values are shown in errors only this far.
_SHOWN = 40


class BodyTooLarge(Exception):
    """More than the cap; ``inflated`` when it was the inflated body that passed it."""

    def __init__(self, limit: int, inflated: bool) -> None:
        super().__init__(limit)
        self.limit = limit
        self.inflated = inflated

    def describe(self) -> str:
        """The error message, naming the limit."""
        what = "the body inflates to" if self.inflated else "the body is"
        return f"{what} more than {self.limit} bytes"


class UnsupportedEncoding(Exception):
    """A ``Content-Encoding`` other than gzip or identity."""

    def __init__(self, encoding: str) -> None:
        shown = encoding[:_SHOWN] + ("..." if len(encoding) > _SHOWN else "")
        super().__init__(
            f"Content-Encoding {shown!r} is not supported; send gzip or an uncompressed body"
        )


class BadEncoding(Exception):
    """A body that does not decode as the ``Content-Encoding`` it declares."""


def encoding_of(header: str) -> str:
    """The one content coding of a ``Content-Encoding`` header: ``""`` or ``"gzip"``; raises
    :class:`UnsupportedEncoding` for anything else (several codings included)."""
    coding = header.strip().lower()
    if coding in _IDENTITY:
        return ""
    if coding in _GZIP:
        return "gzip"
    raise UnsupportedEncoding(header.strip())


async def read_capped(
    chunks: AsyncIterator[bytes], declared_length: str, encoding: str, limit: int
) -> bytes:
    """The body from ``chunks``, inflated when ``encoding`` is ``"gzip"``, at most ``limit``
    bytes as read by the API; refused without reading (or inflating) past the cap."""
    if declared_length.isdigit() and int(declared_length) > limit:
        # A gzipped body is not larger than its content (beyond a few header bytes).
        raise BodyTooLarge(limit, inflated=False)
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    parts: list[bytes] = []
    size = received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(limit, inflated=False)
        if inflater is None:
            size += len(chunk)
            parts.append(chunk)
            continue
        data = chunk
        while data:
            if inflater.eof:
                raise BadEncoding("the body has data after the end of its gzip stream")
            try:
                # Never more than one byte past the cap, however much the chunk inflates to.
                out = inflater.decompress(data, limit - size + 1)
            except zlib.error:
                raise BadEncoding("the body is not valid gzip") from None
            size += len(out)
            if size > limit:
                raise BodyTooLarge(limit, inflated=True)
            parts.append(out)
            data = inflater.unconsumed_tail or inflater.unused_data
            if inflater.eof and inflater.unused_data:
                raise BadEncoding("the body has data after the end of its gzip stream")
    if inflater is not None and not inflater.eof:
        raise BadEncoding("the gzip body is truncated" if received else "the gzip body is empty")
    return b"".join(parts)
