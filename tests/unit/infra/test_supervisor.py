"""The launcher's supervisor, on real child processes: a child that dies is restarted with
backoff and reported (log and status), one stopped on purpose stays down, and one that
cannot be restarted (an in-memory server) marks the stack as failed."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.servers import ManagedProcess, wait_until
from infra.local.supervisor import Child, RestartPolicy, State, Supervisor

# A child that runs until signalled.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
FAST = RestartPolicy(initial_s=0.2, factor=2.0, max_s=1.0, reset_after_s=60.0)


class Slot:
    """One named child the way the stack keeps it: the current process, replaced on start."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.log_dir = log_dir
        self.process: ManagedProcess | None = None
        self.starts = 0

    def start(self) -> None:
        self.process = ManagedProcess(
            self.name, SLEEPER, self.log_dir / f"{self.name}.log", dict(os.environ)
        )
        self.process.start()
        self.starts += 1

    def pid(self) -> int:
        assert self.process is not None
        assert self.process.pid is not None
        return self.process.pid

    def child(self, restartable: bool = True) -> Child:
        return Child(
            name=self.name,
            kind="service",
            process=lambda: self.process,
            launch=self.start,
            healthy=lambda: self.process is not None and self.process.alive,
            restartable=restartable,
            fatal_note="its data was in memory",
        )


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    found = Supervisor(FAST, interval_s=0.05)
    yield found
    found.stop()


@pytest.fixture
def slot(tmp_path: Path) -> Iterator[Slot]:
    found = Slot("profile", tmp_path)
    found.start()
    yield found
    if found.process is not None:
        found.process.stop(5)


def test_backoff_doubles_to_its_cap() -> None:
    policy = RestartPolicy(initial_s=0.5, factor=2.0, max_s=10.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_child_that_dies_is_restarted_and_reported(
    supervisor: Supervisor, slot: Slot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="infra.local.supervisor")
    supervisor.add(slot.child())
    supervisor.start()
    first = slot.pid()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: supervisor.restarts("profile") == 1, 30, "first restart", 0.05)
    wait_until(lambda: supervisor.state("profile") is State.RUNNING, 30, "running", 0.05)
    assert slot.pid() != first
    assert slot.process is not None
    assert slot.process.alive
    (row,) = supervisor.status()
    assert (row.name, row.state, row.restarts, row.crashes) == ("profile", "running", 1, 1)
    assert row.last_exit == "signal SIGKILL"
    assert row.pid == slot.pid()
    messages = [r.getMessage() for r in caplog.records]
    assert "profile exited unexpectedly (signal SIGKILL); restart 1 in 0.2 s" in messages
    assert "profile is healthy again (restart 1)" in messages
    # Dying again before it stayed up a while doubles the wait.
    os.kill(slot.pid(), signal.SIGKILL)
    wait_until(lambda: supervisor.restarts("profile") == 2, 30, "second restart", 0.05)
    assert "profile exited unexpectedly (signal SIGKILL); restart 2 in 0.4 s" in [
        r.getMessage() for r in caplog.records
    ]
    assert supervisor.crashed() == ["profile"]


def test_a_kill_asked_for_is_restarted_but_is_no_crash(supervisor: Supervisor, slot: Slot) -> None:
    supervisor.add(slot.child())
    supervisor.start()
    with supervisor.lock:
        supervisor.expect_exit("profile")
        assert slot.process is not None
        assert slot.process.process is not None
        slot.process.signal(signal.SIGKILL)
        slot.process.process.wait(10)
        supervisor.poll("profile")
        assert supervisor.state("profile") is State.BACKING_OFF
        assert supervisor.status()[0].next_start_in_s > 0
    wait_until(lambda: supervisor.state("profile") is State.RUNNING, 30, "running", 0.05)
    assert supervisor.restarts("profile") == 1
    assert supervisor.crashed() == []


def test_a_child_stopped_on_purpose_stays_down(supervisor: Supervisor, slot: Slot) -> None:
    supervisor.add(slot.child())
    supervisor.start()
    assert slot.process is not None
    slot.process.stop(5)
    wait_until(lambda: supervisor.state("profile") is State.STOPPED, 30, "stopped", 0.05)
    assert slot.starts == 1
    assert supervisor.restarts("profile") == 0


def test_a_child_that_cannot_be_restarted_fails_the_stack(
    supervisor: Supervisor, slot: Slot
) -> None:
    supervisor.add(slot.child(restartable=False))
    supervisor.start()
    os.kill(slot.pid(), signal.SIGKILL)
    wait_until(lambda: supervisor.failure is not None, 30, "failure noticed", 0.05)
    assert supervisor.failure == (
        "profile exited unexpectedly (signal SIGKILL); its data was in memory"
    )
    assert supervisor.state("profile") is State.FAILED
    assert slot.starts == 1
