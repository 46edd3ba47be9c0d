"""GraphiQL renders with no internet: headless Chromium, with every host but loopback made
unresolvable, opens the dev-mode page of a gateway on a real port and GraphiQL renders, its
assets served by the gateway and its schema fetched with the key from the URL fragment."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import create_app
from gateway.ide import NODE_MODULES
from gateway.keys import ApiKeys
from gateway.scopes import Scope as KeyScope
from gateway.settings import GatewaySettings
from infra.local.servers import free_port, wait_until
from tests.support.keys import MemoryKeyRecords

pytestmark = pytest.mark.e2e

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    # No network beyond loopback: every other host name fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=20000",
    "--dump-dom",
)


@dataclass
class Seen:
    """What the gateway was asked: each path, and whether a GraphQL POST carried a key."""

    paths: list[str] = field(default_factory=list)
    keyed_posts: int = 0


def recording(app: ASGIApp, seen: Seen) -> ASGIApp:
    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.paths.append(scope["path"])
            headers = dict(scope["headers"])
            if scope["method"] == "POST" and headers.get(b"authorization", b"").startswith(
                b"Bearer lsk_"
            ):
                seen.keyed_posts += 1
        await app(scope, receive, send)

    return record


@pytest.fixture
def gateway() -> Iterator[tuple[str, str, Seen]]:
    """A dev-mode gateway on a free port (no services: the page needs only the schema)."""
    records = MemoryKeyRecords()
    key = records.add([KeyScope.READ_CUSTOMERS])
    port = free_port()
    settings = GatewaySettings(write_key="wk_test_12345").model_copy(update={"graphiql": True})
    seen = Seen()
    app = recording(create_app(settings, ApiKeys(records)), seen)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "gateway", 0.1)
    try:
        yield f"http://127.0.0.1:{port}", key, seen
    finally:
        server.should_exit = True
        thread.join(30)


async def test_graphiql_renders_offline_with_the_key_from_the_fragment(
    gateway: tuple[str, str, Seen], tmp_path: Path
) -> None:
    chromium = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if chromium is None:
        pytest.skip("no Chromium on PATH")
    if not NODE_MODULES.is_dir():
        pytest.fail("GraphiQL is not installed: run `npm ci` in gateway/graphiql (make does)")
    url, key, seen = gateway
    browser = await asyncio.create_subprocess_exec(
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"{url}/graphql#key={key}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        dom, said = await asyncio.wait_for(browser.communicate(), 120)  # a hang guard
    finally:
        if browser.returncode is None:
            browser.kill()
            await browser.wait()
    page = dom.decode(errors="replace")
    # React rendered GraphiQL (the placeholder text is gone, its editors are there).
    assert "graphiql-container" in page, said.decode(errors="replace")[-2000:]
    assert "Loading..." not in page
    assert "graphiql-editor" in page
    # Every asset came from the gateway, and the schema was fetched with the key.
    assert {
        "/graphql",
        "/graphiql/static/graphiql.min.js",
        "/graphiql/static/graphiql.min.css",
        "/graphiql/static/react.production.min.js",
        "/graphiql/static/react-dom.production.min.js",
    } <= set(seen.paths)
    assert seen.keyed_posts >= 1
    # The key rode in the fragment: it is never part of a request path.
    assert all(key not in path for path in seen.paths)
