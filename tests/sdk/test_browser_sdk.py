"""analytics.js (``@segment/analytics-next``, pinned in tests/sdk/node) in headless Chromium,
unchanged, pointed at the gateway with ``apiHost``/``protocol``: calls from a page on another
origin (CORS), the short routes (``/v1/t``, ``/v1/i``, ``/v1/p``) and the write key in a
``text/plain`` body, checked over GraphQL. Nothing is loaded from a CDN: a local server serves
the page and the package's browser bundle, and the settings are given inline.

The page's origin must be allowed by ``LODESTAR_INGEST_CORS_ORIGINS``, so this module runs its
own stack (its own SecantusDB and Tansu too) with that variable set."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.local.servers import free_port
from infra.local.stack import Stack, StackPorts
from tests.sdk.checks import counts, settled
from tests.sdk.conftest import NODE_DIR
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

PAGE = Path(__file__).resolve().parent / "browser" / "page.html"
BUNDLES = NODE_DIR / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
BUNDLE_PATH = "/analytics-next/bundles/"
# Headless Chromium in a container: no sandbox (root), no GPU, no calls home.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
)
REPORT_TIMEOUT_S = 90.0


class PageServer:
    """Serves the test page, its configuration and the analytics.js bundle; collects the
    page's report (what it sent and what it was answered)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.config: dict[str, Any] = {}
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/":
                    self._send(200, "text/html", PAGE.read_bytes())
                elif self.path == "/config.js":
                    body = f"window.LODESTAR_TEST = {json.dumps(server.config)};"
                    self._send(200, "text/javascript", body.encode())
                elif self.path.startswith(BUNDLE_PATH):
                    name = self.path[len(BUNDLE_PATH) :]
                    file = BUNDLES / name
                    # Only the package's own files: no other path of the machine.
                    if "/" in name or name.startswith(".") or not file.is_file():
                        self._send(404, "text/plain", b"not found")
                    else:
                        self._send(200, "text/javascript", file.read_bytes())
                else:
                    self._send(404, "text/plain", b"not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if self.path == "/report":
                    server.reports.put(json.loads(body))
                self._send(204, "text/plain", b"")

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the page's requests are in its report."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        """The page's origin, which the gateway must allow."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    """The page's own origin, on a free port."""
    server = PageServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def foreign_page_server() -> Iterator[PageServer]:
    """The same page on an origin the gateway does not allow."""
    server = PageServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser_stack(
    page_server: PageServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack whose ingest door allows the page's origin."""
    stack = Stack(
        StackPorts.free(),
        tmp_path_factory.mktemp("browser-logs"),
        extra_env={
            "LODESTAR_LOG_LEVEL": "INFO",
            "LODESTAR_INGEST_CORS_ORIGINS": page_server.origin,
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def browser_platform(browser_stack: Stack) -> AsyncIterator[Platform]:
    """An HTTP client of the browser test's stack."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield Platform(browser_stack, client)


async def run_page(
    chromium: str,
    server: PageServer,
    stack: Stack,
    calls: list[tuple[str, list[Any]]],
    profile: Path,
) -> dict[str, Any]:
    """Open the page in Chromium with ``calls`` to make; returns its report once it has
    made them all (or failed), failing with Chromium's output if it never reports."""
    server.config = {
        "writeKey": stack.write_key,
        "apiHost": f"127.0.0.1:{stack.ports.gateway}/v1",
        "calls": calls,
    }
    log = profile.with_suffix(".log")
    with log.open("wb") as output:
        browser = await asyncio.create_subprocess_exec(
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"{server.origin}/",
            stdout=output,
            stderr=output,
        )
    try:
        report: dict[str, Any] = await asyncio.to_thread(
            server.reports.get, timeout=REPORT_TIMEOUT_S
        )
    except queue.Empty:
        said = log.read_text(errors="replace")[-3000:]
        raise AssertionError(
            f"the page sent no report within {REPORT_TIMEOUT_S}s; chromium said: {said}"
        ) from None
    finally:
        if browser.returncode is None:
            browser.terminate()
            try:
                await asyncio.wait_for(browser.wait(), 10)
            except TimeoutError:
                browser.kill()
                await browser.wait()
    return report


def assert_all_sent(report: dict[str, Any], paths: list[str]) -> None:
    """Every call reached the gateway on its short route and was answered 2xx."""
    assert report["errors"] == [], f"analytics.js reported errors: {report['errors']}"
    # Only this machine: the page server and the gateway, no CDN.
    elsewhere = [url for url in report["resources"] if not url.startswith("http://127.0.0.1:")]
    assert elsewhere == [], f"the page reached beyond this machine: {elsewhere}"
    assert any(BUNDLE_PATH in url for url in report["resources"]), report["resources"]
    sent = [r for r in report["requests"] if "/v1/" in r["url"]]
    # "Failed to fetch" is what a page sees of a CORS refusal (or nothing listening).
    answers = [
        f"{r['method'].upper()} /v1{r['url'].rsplit('/v1', 1)[1]} -> "
        + str(r.get("status", r.get("error")))
        for r in sent
    ]
    assert [r["url"].rsplit("/v1", 1)[1] for r in sent] == paths, answers
    assert all(200 <= r.get("status", 0) < 300 for r in sent), answers


async def test_identify_track_page(
    chromium: str,
    node_modules: Path,
    page_server: PageServer,
    browser_stack: Stack,
    browser_platform: Platform,
    tmp_path: Path,
) -> None:
    user_id = unique("web-user")
    report = await run_page(
        chromium,
        page_server,
        browser_stack,
        [
            ("identify", [user_id, {"email": f"{user_id}@example.com", "plan": "pro"}]),
            ("track", ["Product Viewed", {"product_id": "sku-9"}]),
            ("track", ["Product Viewed", {"product_id": "sku-10"}]),
            ("page", ["Shop", "Product"]),
        ],
        tmp_path / "profile",
    )
    assert_all_sent(report, ["/i", "/t", "/t", "/p"])
    customer = await settled(
        browser_platform,
        "user_id",
        user_id,
        lambda c: counts(c).get("Product Viewed") == 2 and c["behaviour"]["lastPage"] == "Product",
        f"{user_id}: 2 x Product Viewed and the Product page",
    )
    assert customer["traits"]["plan"] == "pro"
    assert {"type": "email", "value": f"{user_id}@example.com"} in customer["identifiers"]


async def test_anonymous_visit_joins_the_customer_on_identify(
    chromium: str,
    node_modules: Path,
    page_server: PageServer,
    browser_stack: Stack,
    browser_platform: Platform,
    tmp_path: Path,
) -> None:
    user_id = unique("web-user")
    report = await run_page(
        chromium,
        page_server,
        browser_stack,
        [
            ("page", ["Docs", "Landing"]),
            ("track", ["Video Played", {"seconds": 42}]),
            ("identify", [user_id, {"plan": "free"}]),
            ("track", ["Signed Up"]),
        ],
        tmp_path / "profile",
    )
    assert_all_sent(report, ["/p", "/t", "/i", "/t"])
    anonymous_id = report["anonymousId"]
    assert anonymous_id, report
    customer = await settled(
        browser_platform,
        "user_id",
        user_id,
        lambda c: counts(c) == {"Signed Up": 1, "Video Played": 1},
        f"{user_id} with the anonymous visit's Video Played",
    )
    assert {"type": "anonymous_id", "value": anonymous_id} in customer["identifiers"]
    assert customer["behaviour"]["lastPage"] == "Landing"
    assert customer["traits"]["plan"] == "free"


async def test_a_page_on_another_origin_is_refused(
    chromium: str,
    node_modules: Path,
    foreign_page_server: PageServer,
    browser_stack: Stack,
    browser_platform: Platform,
    tmp_path: Path,
) -> None:
    user_id = unique("web-user")
    report = await run_page(
        chromium,
        foreign_page_server,
        browser_stack,
        [("identify", [user_id, {"plan": "free"}]), ("track", ["Foreign Visit"])],
        tmp_path / "profile",
    )
    sent = [r for r in report["requests"] if "/v1/" in r["url"]]
    assert [r["url"].rsplit("/v1", 1)[1] for r in sent] == ["/i", "/t"], report
    # The browser gets no answer it may read: the preflight is not allowed.
    assert all("status" not in r for r in sent), sent
    marker = await browser_platform.send(
        "/v1/track", {"userId": user_id, "event": "Marker", "messageId": f"{user_id}-marker"}
    )
    assert marker.status_code == 200, marker.text
    # Same key, same partition: had the page's calls been produced, they would be in by now.
    customer = await settled(
        browser_platform,
        "user_id",
        user_id,
        lambda c: counts(c).get("Marker") == 1,
        f"{user_id}: the marker",
    )
    assert counts(customer) == {"Marker": 1}
    assert customer["traits"] == {}
