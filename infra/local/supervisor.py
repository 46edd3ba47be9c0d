"""The launcher's supervisor: like Kubernetes, a child that exits without being asked is
started again with exponential backoff, and the rest keeps running.

It knows children only through :class:`Child` (how to find the current process, start a new
one and check its health), so the stack decides what a service, a stand-in or a server is.
One thread polls every child; restarts, exits and recoveries are logged on the
``infra.local.supervisor`` logger (names, exit codes and signals only: nothing from a request).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from infra.local.servers import ManagedProcess, describe_exit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts: ``initial_s`` doubling up to ``max_s``; a child that stayed
    up ``reset_after_s`` starts again from ``initial_s`` the next time it dies."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 15.0
    reset_after_s: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows ``failures`` exits in a row (>= 1)."""
        return float(min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1)))


class State(StrEnum):
    """Where a supervised child is."""

    RUNNING = "running"
    # Started again, not healthy yet.
    RESTARTING = "restarting"
    # Exited; waits for its backoff before the next start.
    BACKING_OFF = "backing off"
    # Stopped on purpose (ManagedProcess.stop): left down.
    STOPPED = "stopped"
    # Exited and cannot be restarted (an in-memory server): the stack is broken.
    FAILED = "failed"


@dataclass(frozen=True)
class Child:
    """What the supervisor needs to know about one named child.

    ``process`` returns the current process (None when there is none), ``launch`` starts a new
    one (blocking until it is spawned, not until healthy), ``healthy`` is one quick check, and
    ``restartable`` False makes an unasked exit fatal (``fatal_note`` says why).
    """

    name: str
    kind: str
    process: Callable[[], ManagedProcess | None]
    launch: Callable[[], None]
    healthy: Callable[[], bool]
    restartable: bool = True
    fatal_note: str = ""


@dataclass(frozen=True)
class ProcessStatus:
    """One row of the stack's status."""

    name: str
    kind: str
    pid: int | None
    state: str
    restarts: int
    # Exits nobody asked for (a crash, an OOM kill); a kill through the stack is not one.
    crashes: int
    last_exit: str
    # Seconds until the next start while backing off, else 0.
    next_start_in_s: float
    # From the stack's observer (infra/local/observe.py): its readiness ("" when not
    # looked at), its consumers' lag summed (None: none reported), its log's last error.
    health: str = ""
    consumer_lag: int | None = None
    last_error: str = ""


@dataclass
class _Watch:
    child: Child
    state: State
    process: ManagedProcess | None
    restarts: int = 0
    crashes: int = 0
    # Exits in a row without staying up reset_after_s: drives the backoff.
    failures: int = 0
    last_exit: str = ""
    next_start: float = 0.0
    running_since: float = 0.0
    # The next exit was asked for (Stack.kill): restarted, but not counted as a crash.
    expected_exit: bool = False


class Supervisor:
    """Watches children on one thread and restarts those that die (see the module doc).

    ``lock`` is held while a child's state changes; the stack holds it too while it kills or
    restarts a child on request, so the two never start the same child twice.
    """

    def __init__(self, policy: RestartPolicy | None = None, interval_s: float = 0.2) -> None:
        self.policy = policy or RestartPolicy()
        self.interval_s = interval_s
        self.lock = threading.RLock()
        self._watches: dict[str, _Watch] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Set when a child that cannot be restarted died: what happened, for the launcher.
        self.failure: str | None = None

    def add(self, child: Child) -> None:
        """Watch ``child`` (running now) from the next poll on."""
        with self.lock:
            self._watches[child.name] = _Watch(
                child, State.RUNNING, child.process(), running_since=time.monotonic()
            )

    def start(self) -> None:
        """Start the polling thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop restarting anything (before the stack stops its children)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    def expect_exit(self, name: str) -> None:
        """The next exit of ``name`` is asked for (a kill): restart it, count no crash."""
        with self.lock:
            if name in self._watches:
                self._watches[name].expected_exit = True

    def poll(self, name: str) -> None:
        """Look at one child now (after a kill, so the status shows the exit at once)."""
        with self.lock:
            if name in self._watches:
                self._check(self._watches[name], time.monotonic())

    def restarted(self, name: str) -> None:
        """``name`` was started again on request: count it, and wait for it to be healthy."""
        with self.lock:
            watch = self._watches.get(name)
            if watch is None:
                return
            watch.process = watch.child.process()
            watch.restarts += 1
            watch.state = State.RESTARTING

    def state(self, name: str) -> State:
        """The state of one child."""
        with self.lock:
            return self._watches[name].state

    def restarts(self, name: str) -> int:
        """How many times ``name`` was started again."""
        with self.lock:
            return self._watches[name].restarts

    def status(self) -> list[ProcessStatus]:
        """Every child's state, restarts and last exit."""
        now = time.monotonic()
        with self.lock:
            return [
                ProcessStatus(
                    name=name,
                    kind=w.child.kind,
                    pid=w.process.pid if w.process is not None and w.process.alive else None,
                    state=str(w.state),
                    restarts=w.restarts,
                    crashes=w.crashes,
                    last_exit=w.last_exit,
                    next_start_in_s=(
                        round(max(0.0, w.next_start - now), 1)
                        if w.state is State.BACKING_OFF
                        else 0.0
                    ),
                )
                for name, w in self._watches.items()
            ]

    def crashed(self) -> list[str]:
        """Children that exited without being asked at least once, or are down for good."""
        with self.lock:
            return [
                name for name, w in self._watches.items() if w.crashes or w.state is State.FAILED
            ]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for name in list(self._watches):
                if self._stop.is_set():
                    return
                try:
                    with self.lock:
                        self._check(self._watches[name], time.monotonic())
                except Exception:
                    # The supervisor must outlive any one bad restart.
                    log.exception("supervising %s failed", name)

    def _check(self, watch: _Watch, now: float) -> None:
        current = watch.child.process()
        if current is not watch.process:
            # Replaced from outside (a bench swaps the gateway, a server restarted by hand).
            watch.process = current
            if current is not None and current.alive and watch.state is not State.RESTARTING:
                self._set(watch, State.RUNNING)
                watch.running_since = now
        process = watch.process
        if watch.state is State.BACKING_OFF:
            if now >= watch.next_start and not self._stop.is_set():
                self._launch(watch, now)
            return
        if process is None or watch.state in (State.STOPPED, State.FAILED):
            return
        if process.alive:
            if watch.state is State.RESTARTING and watch.child.healthy():
                self._set(watch, State.RUNNING)
                watch.running_since = now
                log.info("%s is healthy again (restart %d)", watch.child.name, watch.restarts)
            elif watch.failures and now - watch.running_since >= self.policy.reset_after_s:
                watch.failures = 0
            return
        self._exited(watch, process, now)

    def _exited(self, watch: _Watch, process: ManagedProcess, now: float) -> None:
        name = watch.child.name
        if process.stopped:
            self._set(watch, State.STOPPED)
            log.info("%s stopped", name)
            return
        watch.last_exit = describe_exit(process.returncode)
        asked, watch.expected_exit = watch.expected_exit, False
        if not asked:
            watch.crashes += 1
        if watch.state is State.RUNNING and now - watch.running_since >= self.policy.reset_after_s:
            watch.failures = 0
        watch.failures += 1
        why = "was killed on request" if asked else "exited unexpectedly"
        if not watch.child.restartable:
            self._set(watch, State.FAILED)
            self.failure = f"{name} {why} ({watch.last_exit}); {watch.child.fatal_note}"
            log.error("%s", self.failure)
            return
        delay = self.policy.delay(watch.failures)
        watch.next_start = now + delay
        self._set(watch, State.BACKING_OFF)
        log.warning(
            "%s %s (%s); restart %d in %.1f s",
            name,
            why,
            watch.last_exit,
            watch.restarts + 1,
            delay,
        )

    def _launch(self, watch: _Watch, now: float) -> None:
        watch.restarts += 1
        try:
            watch.child.launch()
        except Exception as exc:
            watch.failures += 1
            delay = self.policy.delay(watch.failures)
            watch.next_start = now + delay
            watch.last_exit = f"could not start: {type(exc).__name__}"
            log.warning(
                "%s could not be started (%s); next try in %.1f s",
                watch.child.name,
                type(exc).__name__,
                delay,
            )
            return
        watch.process = watch.child.process()
        self._set(watch, State.RESTARTING)
        log.info("%s started again (restart %d)", watch.child.name, watch.restarts)

    def _set(self, watch: _Watch, state: State) -> None:
        watch.state = state
