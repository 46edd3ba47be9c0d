"""A service's shutdown is bounded: a consumer that never drains and a cleanup that never
returns (a dead Kafka or MongoDB) are left behind after their bounds, the cleanups after
them still run, and a watchdog ends a process whose shutdown still overruns."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.platform import runtime
from services.platform.rpc import GrpcServer

ROOT = Path(__file__).resolve().parents[3]


class StuckSubscription:
    """A consumer stuck retrying against a dead dependency: it ignores stop()."""

    group = "stuck"

    def __init__(self) -> None:
        # Set once it runs: the shutdown's signal handlers are installed by then.
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        await asyncio.Event().wait()

    async def stop(self) -> None:
        return None


async def test_a_stuck_consumer_and_a_hung_cleanup_do_not_hold_the_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small bounds keep the test quick; the watchdog must not end the test run.
    monkeypatch.setattr(runtime, "DRAIN_S", 0.3, raising=False)
    monkeypatch.setattr(runtime, "STEP_S", 0.3, raising=False)
    monkeypatch.setattr(runtime, "SHUTDOWN_BUDGET_S", 3.0, raising=False)
    monkeypatch.setattr(runtime, "HARD_LIMIT_S", 7 * 86_400.0, raising=False)
    closed: list[str] = []

    async def hung_close() -> None:
        closed.append("hung")
        await asyncio.Event().wait()

    def last_close() -> None:
        closed.append("last")

    server = GrpcServer("127.0.0.1", 0, [], lambda _: None)
    stuck = StuckSubscription()
    serving = asyncio.create_task(
        runtime.serve_until_shutdown(
            server,
            [stuck],  # type: ignore[list-item]
            [hung_close, last_close],
        )
    )
    await asyncio.wait_for(stuck.running.wait(), 30)
    os.kill(os.getpid(), signal.SIGTERM)
    try:
        # Generous: the point is that it returns at all (it used to wait forever).
        async with asyncio.timeout(30):
            await serving
    finally:
        if not serving.done():
            serving.cancel()
    assert closed == ["hung", "last"]


def test_the_watchdog_ends_a_process_whose_shutdown_overruns() -> None:
    hung = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; from services.platform.runtime import arm_watchdog; "
            "arm_watchdog(0.5); time.sleep(120)",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")])},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert hung.returncode == runtime.HARD_EXIT_STATUS
