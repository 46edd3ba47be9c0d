"""The outbound clients' one lifecycle: opened on first use, reused, closed and reopened."""

from __future__ import annotations

import httpx
import pytest

from services.platform.httpclient import PooledHttpClient
from services.wallet.clients.apns import ApnsClient
from services.wallet.clients.google import GoogleWalletClient


class Opener:
    """Counts the clients it opens."""

    def __init__(self) -> None:
        self.opened: list[httpx.AsyncClient] = []

    def __call__(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204)))
        self.opened.append(client)
        return client


async def test_one_client_from_first_use_until_closed() -> None:
    opener = Opener()
    pooled = PooledHttpClient(opener)
    assert opener.opened == []
    first = pooled.http()
    assert pooled.http() is first
    assert len(opener.opened) == 1
    await pooled.aclose()
    assert first.is_closed
    second = pooled.http()
    assert second is not first
    assert not second.is_closed
    await pooled.aclose()
    await pooled.aclose()  # closing twice is harmless
    assert second.is_closed


async def test_async_with_closes_the_pool() -> None:
    opener = Opener()
    async with PooledHttpClient(opener) as pooled:
        response = await pooled.http().get("http://127.0.0.1/")
        assert response.status_code == 204
    assert opener.opened[0].is_closed


@pytest.mark.parametrize("client", [ApnsClient, GoogleWalletClient])
def test_the_outbound_clients_share_the_lifecycle(client: type) -> None:
    assert issubclass(client, PooledHttpClient)
    for name in ("aclose", "__aenter__", "__aexit__"):
        assert name not in vars(client), f"{client.__name__} writes {name} again"
