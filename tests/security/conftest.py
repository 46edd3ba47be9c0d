"""What the hostile-input suites share: one keep-alive client per module, and a sentinel
customer that no hostile input may change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from infra.local.stack import Stack
from tests.security.sentinel import Sentinel, plant_sentinel


@pytest.fixture(scope="module")
def sentinel(stack: Stack) -> Sentinel:
    """A customer the run must never change (its message ids are in the fuzz's pools)."""
    return asyncio.run(plant_sentinel(stack))


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One keep-alive connection for a whole fuzz run: a 4xx must not break it."""
    with httpx.Client(timeout=60) as http:
        yield http
