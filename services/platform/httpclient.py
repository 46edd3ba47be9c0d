"""One lifecycle for the outbound HTTP clients (APNs, Google Wallet): a pooled
``httpx.AsyncClient`` opened on first use, reused by every call, closed on ``aclose`` (a later
call opens a new one), and usable as ``async with``. Clients inherit it."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import httpx


class PooledHttpClient:
    """Base of an outbound client: holds the one ``httpx.AsyncClient`` that ``open`` makes,
    from first use until closed."""

    def __init__(self, open: Callable[[], httpx.AsyncClient]) -> None:
        self._open_http = open
        self._http_client: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        """The pooled client, opened now when none is open."""
        if self._http_client is None:
            self._http_client = self._open_http()
        return self._http_client

    async def aclose(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        if self._http_client is not None:
            client, self._http_client = self._http_client, None
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
