"""Property-based hostile input against every ingest route of the running platform.

Oracle: each answer is a 200 that lands or a 4xx naming the problem; afterwards no process
died, no log holds a traceback or an ERROR, the dead-letter topic got nothing (every accepted
event landed), and a sentinel customer whose message ids the fuzz reuses is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.local.stack import Stack
from tests.security.hostile import FUZZ, calls, dumps, raw_bodies
from tests.security.oracle import Baseline, ingest_problem
from tests.security.sentinel import Sentinel
from tests.support.kafka import unique

pytestmark = pytest.mark.e2e

ROUTES = ["track", "identify", "page", "screen", "alias", "group", "batch"]


def post(client: httpx.Client, stack: Stack, route: str, body: bytes) -> httpx.Response:
    """POST raw bytes to an ingest route with the write key."""
    return client.post(
        f"{stack.gateway_url}/v1/{route}",
        content=body,
        headers={"Content-Type": "application/json"},
        auth=(stack.write_key, ""),
    )


def run_fuzz(stack: Stack, sentinel: Sentinel, client: httpx.Client, body_of: Any) -> None:
    """Send hostile bodies, checking every answer, then the oracle around the run."""
    baseline = asyncio.run(Baseline.take(stack))
    seen: dict[int, int] = {}

    @FUZZ
    @given(route=st.sampled_from(ROUTES), data=st.data())
    def one(route: str, data: st.DataObject) -> None:
        body = body_of(route, data)
        response = post(client, stack, route, body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        problem = ingest_problem(response)
        assert problem is None, f"{route} {body[:300]!r}: {problem}"

    one()
    # The connection still works and the platform still accepts a good event.
    good = post(client, stack, "track", dumps({"userId": unique("fuzz"), "event": "After"}))
    assert good.status_code == 200, good.text
    problems = asyncio.run(baseline.problems())
    problems += asyncio.run(sentinel.changes(stack))
    assert problems == [], problems
    # The fuzz reached both outcomes, so the oracle judged accepted and refused input.
    assert seen.get(200, 0) > 0, seen
    assert seen.get(400, 0) > 0, seen


def test_hostile_calls(stack: Stack, sentinel: Sentinel, client: httpx.Client) -> None:
    users = [unique("fuzz") for _ in range(5)]
    message_ids = [*sentinel.message_ids, unique("msg")]

    def body_of(route: str, data: st.DataObject) -> bytes:
        strategy = calls(users, message_ids)
        if route == "batch":
            batch = data.draw(st.lists(strategy, min_size=1, max_size=4))
            return dumps({"batch": batch})
        return dumps(data.draw(strategy))

    run_fuzz(stack, sentinel, client, body_of)


def test_hostile_raw_bodies(stack: Stack, sentinel: Sentinel, client: httpx.Client) -> None:
    def body_of(route: str, data: st.DataObject) -> bytes:
        if data.draw(st.booleans()):
            return data.draw(raw_bodies())
        # A valid call now and then keeps both outcomes in the run.
        return dumps({"userId": unique("fuzz"), "event": "Fine", "type": "track"})

    run_fuzz(stack, sentinel, client, body_of)
