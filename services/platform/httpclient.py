"""One lifecycle for the outbound HTTP clients (APNs, Google Wallet): a pooled
``httpx.AsyncClient`` opened on first use, reused by every call, closed on ``aclose`` (a later
call opens a new one), and usable as ``async with``."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import httpx


class PooledHttp:
    """Holds the one ``httpx.AsyncClient`` that ``open`` makes, from first use until closed."""

    def __init__(self, open: Callable[[], httpx.AsyncClient]) -> None:
        self._open = open
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """The pooled client, opened now when none is open."""
        if self._client is None:
            self._client = self._open()
        return self._client

    async def aclose(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        if self._client is not None:
            client, self._client = self._client, None
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
