"""Signed .pkpass download links: a link opens its own pass until it expires; a forged,
altered or expired link, an unknown serial, a Google or voided pass are refused with the
documented status and no pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.wallet.applepass import PKPASS_MEDIA_TYPE
from services.wallet.downloads import DownloadLinks
from services.wallet.passes import WalletPasses
from services.wallet.webservice import PassDownloads, PassKitWebService

SECRET = b"0123456789abcdef0123456789abcdef"
PASSES: dict[str, dict[str, Any]] = {
    "apple-1": {"_id": "apple-1", "platform": "apple"},
    "google-1": {"_id": "google-1", "platform": "google"},
    "void-1": {"_id": "void-1", "platform": "apple", "voided": True},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    async def get_pass(self, serial_number: str) -> dict[str, Any] | None:
        return PASSES.get(serial_number)


class FakePasses:
    store = FakeStore()

    async def find(self, serial_number: str) -> dict[str, Any] | None:
        return await self.store.get_pass(serial_number)

    def render(self, doc: dict[str, Any]) -> bytes:
        return f"pkpass of {doc['_id']}".encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def links(clock: Clock) -> DownloadLinks:
    return DownloadLinks(SECRET, "https://passes.example/", 300, clock)


@pytest.fixture
async def http(links: DownloadLinks) -> AsyncIterator[httpx.AsyncClient]:
    passes = cast(WalletPasses, FakePasses())
    app = PassKitWebService(passes, None, PassDownloads(passes, links)).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://passes.example") as c:
        yield c


async def test_a_link_serves_its_pass_until_it_expires(
    http: httpx.AsyncClient, links: DownloadLinks, clock: Clock
) -> None:
    url, expires_at = links.link("apple-1")
    assert url.startswith("https://passes.example/downloads/apple-1?expires=")
    assert expires_at.timestamp() == clock.now + 300
    response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == PKPASS_MEDIA_TYPE
    assert response.headers["cache-control"] == "no-store"
    assert response.content == b"pkpass of apple-1"
    clock.now += 301
    response = await http.get(url)
    assert response.status_code == 410
    assert b"pkpass" not in response.content


def _parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path, query["expires"][0], query["sig"][0]


async def test_forged_and_altered_links_are_403(
    http: httpx.AsyncClient, links: DownloadLinks
) -> None:
    path, expires, sig = _parts(links.link("apple-1")[0])
    other_path, _, _ = _parts(links.link("void-1")[0])
    forged = [
        f"{path}",
        f"{path}?expires={expires}",
        f"{path}?sig={sig}",
        f"{path}?expires={int(expires) + 3600}&sig={sig}",
        f"{path}?expires={expires}&sig={'0' * 64}",
        f"{path}?expires={expires}&sig={sig.upper()}",
        f"{path}?expires=-1&sig={sig}",
        f"{path}?expires={'9' * 5000}&sig={sig}",
        f"{path}?expires={expires}&sig={sig}%00",
        # A link for one pass does not open another.
        f"{other_path}?expires={expires}&sig={sig}",
        f"/downloads/unknown?expires={expires}&sig={sig}",
    ]
    for url in forged:
        response = await http.get(url)
        assert response.status_code == 403, url
        assert b"pkpass" not in response.content


async def test_a_key_made_elsewhere_does_not_open_passes(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    elsewhere = DownloadLinks(b"another secret of 32 bytes......", "https://x", 300, clock)
    path, expires, sig = _parts(elsewhere.link("apple-1")[0])
    assert (await http.get(f"{path}?expires={expires}&sig={sig}")).status_code == 403


async def test_unknown_google_and_voided_passes(
    http: httpx.AsyncClient, links: DownloadLinks
) -> None:
    assert (await http.get(links.link("nobody")[0])).status_code == 404
    assert (await http.get(links.link("google-1")[0])).status_code == 404
    assert (await http.get(links.link("void-1")[0])).status_code == 410
    assert (await http.get("/downloads/%00bad?expires=1&sig=ab")).status_code == 404
    assert (await http.get("/downloads/" + "a" * 500)).status_code == 404


async def test_without_links_the_route_does_not_exist() -> None:
    app = PassKitWebService(cast(WalletPasses, FakePasses())).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://passes.example") as c:
        assert (await c.get("/downloads/apple-1?expires=1&sig=ab")).status_code == 404
