"""Crash faults while events stream in (issue: resilience). Each run sends one workload
through the ingest API of a private stack (its own MongoDB-wire and Kafka-wire servers, so
killing processes disturbs no other test), injects one fault a third of the way in, and
compares every profile and the segment's members with the reference
(:mod:`tests.resilience.crash`): nothing lost, nothing counted twice, nothing dead-lettered.

The fast test (``make test``) kills the profile service with 200 customers. The full set
(``make test-resilience``, marker ``resilience_slow``) runs a baseline and every fault with
1,000 customers (10,000 events) and writes one JSON line per fault to
``.resilience/crash-faults.jsonl`` for the report; and the scale-out runs: two processes of
every consumer service in their groups (then three, over 12 partitions), one replica killed
mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from infra.local.stack import ROOT, SERVICES, Stack, StackPorts
from tests.resilience.crash import FaultResult, run_fault
from tests.support.platform import UNLIMITED_INGEST

pytestmark = [pytest.mark.e2e]

RESULTS = ROOT / ".resilience" / "crash-faults.jsonl"
FAULTS = [
    "none",
    "kill:identity",
    "kill:profile",
    "kill:segmentation",
    "kill:recommendation",
    "kill:wallet",
    "kill:gateway",
    "kill:mongodb",
    "stop:profile:10",
]


@contextmanager
def own_stack(replicas: int = 1, partitions: int | None = None) -> Iterator[Stack]:
    """A whole stack of its own on free ports, ``replicas`` processes of every consumer
    service in their groups."""
    with tempfile.TemporaryDirectory(prefix="lodestar-resilience-") as logs:
        stack = Stack(
            StackPorts.free(),
            Path(logs),
            # File storage: the MongoDB-wire server can be killed and come back with its data.
            mongo_storage_dir=Path(logs) / "mongodb",
            extra_env=dict(UNLIMITED_INGEST),
            replicas=dict.fromkeys(SERVICES, replicas) if replicas > 1 else None,
            partitions=partitions,
        )
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def private_stack() -> Iterator[Stack]:
    """A whole stack of its own on free ports."""
    with own_stack() as stack:
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def assert_exact(result: FaultResult) -> None:
    assert result.lost == 0, result.row()
    assert result.duplicated == 0, result.row()
    assert result.wrong_profiles == 0, result.row()
    assert result.wrong_memberships == 0, result.row()
    assert result.dead_letters_new == 0, result.row()
    assert result.stored == result.sent


async def test_kill_9_profile_mid_stream_loses_and_doubles_nothing(
    private_stack: Stack, http: httpx.AsyncClient
) -> None:
    result = await run_fault(private_stack, http, "kill:profile", customers=200, seed=1)
    print(json.dumps(result.row()))
    assert result.recovery_s is not None
    assert_exact(result)


@pytest.mark.resilience_slow
@pytest.mark.parametrize("fault", FAULTS)
async def test_every_fault_keeps_the_data_exact(
    private_stack: Stack, http: httpx.AsyncClient, fault: str
) -> None:
    result = await run_fault(private_stack, http, fault, customers=1_000, seed=7)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result.row()) + "\n")
    assert_exact(result)


@pytest.mark.resilience_slow
@pytest.mark.parametrize(
    ("replicas", "partitions", "faults"),
    [
        (2, None, [f"kill:{name}-2" for name in SERVICES]),
        (3, 12, ["kill:profile-3", "kill:identity-2"]),
    ],
)
async def test_a_replica_killed_mid_stream_hands_over_and_the_data_stays_exact(
    http: httpx.AsyncClient, replicas: int, partitions: int | None, faults: list[str]
) -> None:
    # Every consumer service runs ``replicas`` processes in its consumer group; one is
    # killed while events stream in: its partitions move to the others (and back once the
    # launcher restarted it), and every count stays exact.
    # The stack is started off the test's event loop (starting it runs a loop of its own).
    manager = own_stack(replicas, partitions)
    stack = await asyncio.to_thread(manager.__enter__)
    try:
        for fault in faults:
            result = await run_fault(stack, http, fault, customers=1_000, seed=11)
            result.fault = f"{fault} ({replicas} replicas, {partitions or 6} partitions)"
            RESULTS.parent.mkdir(exist_ok=True)
            with RESULTS.open("a") as out:
                out.write(json.dumps(result.row()) + "\n")
            assert_exact(result)
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
