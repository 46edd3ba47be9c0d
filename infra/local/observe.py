"""What the launcher's status shows beyond the supervisor's states: each process's health,
its consumer lag and the last error in its log, looked at by one background thread every
few seconds (so ``python -m infra.local status`` only reads a file and stays fast).

- health: the readiness check of the process (a service's gRPC health, the gateway's
  ``/readyz``, a server's own probe), ``ready`` or ``not ready``;
- lag: the sum of ``lodestar_consumer_lag`` over the partitions the process holds, scraped
  from its ``/metrics`` with the run's metrics token when one is set;
- last error: the newest ERROR line its log got during this run (the JSON logs' ``msg``,
  which carries no PII; another line is shown as it is), truncated.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

# The longest last error shown (the table must fit a terminal).
MAX_ERROR = 72
# How much of a log's end is searched for its last error.
TAIL_BYTES = 256 * 1024
LAG_METRIC = "lodestar_consumer_lag"
READY = "ready"
NOT_READY = "not ready"
_ERROR_WORD = re.compile(r"\b(ERROR|CRITICAL|FATAL|PANIC)\b")


@dataclass(frozen=True)
class Probe:
    """How one process is looked at: its readiness check, its metrics URL (None: it has no
    consumers to report) and its log, of which the first ``log_offset`` bytes were written
    before this run."""

    name: str
    ready: Callable[[], bool]
    metrics_url: str | None
    log_path: Path | None
    log_offset: int = 0


@dataclass(frozen=True)
class Observation:
    """One look at one process."""

    health: str
    # None when the process reports no consumer lag (no consumers, or not scraped).
    consumer_lag: int | None
    last_error: str


def consumer_lag(exposition: str) -> int | None:
    """The sum of every ``lodestar_consumer_lag`` sample in a Prometheus text page; None
    when there is none."""
    total: float | None = None
    for family in text_string_to_metric_families(exposition):
        if family.name != LAG_METRIC:
            continue
        for sample in family.samples:
            total = (total or 0.0) + sample.value
    return None if total is None else int(total)


def shorten(text: str, limit: int = MAX_ERROR) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error_of(line: str) -> str | None:
    """The error a log line reports, or None when it reports none."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            entry = json.loads(stripped)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            if str(entry.get("level", "")).upper() not in ("ERROR", "CRITICAL"):
                return None
            at = str(entry.get("ts", ""))[11:19]
            return shorten(f"{at} {entry.get('msg', '')}".strip())
    return shorten(stripped) if _ERROR_WORD.search(stripped) else None


def last_error(path: Path | None, offset: int = 0, tail_bytes: int = TAIL_BYTES) -> str:
    """The newest error line of the log at ``path`` written after its first ``offset``
    bytes (see :class:`Probe`), or ``""``."""
    if path is None:
        return ""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = max(offset, size - tail_bytes)
            if start >= size:
                return ""
            handle.seek(start)
            text = handle.read(size - start).decode(errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()
    if start > offset and lines:
        # Cut mid-line by the tail: the first line is partial.
        lines = lines[1:]
    for line in reversed(lines):
        found = _error_of(line)
        if found is not None:
            return found
    return ""


def scrape_lag(url: str, token: str | None, timeout_s: float = 1.0) -> int | None:
    """The consumer lag a process's ``/metrics`` reports; None when it cannot be read."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if reply.status_code != 200:
        return None
    return consumer_lag(reply.text)


def observe(probe: Probe, metrics_token: str | None) -> Observation:
    """One look at one process (each check bounded by its own short timeout)."""
    try:
        healthy = probe.ready()
    except Exception:
        # A probe that cannot even ask (a process mid-restart) says the same as a failed one.
        healthy = False
    lag = scrape_lag(probe.metrics_url, metrics_token) if probe.metrics_url else None
    return Observation(
        health=READY if healthy else NOT_READY,
        consumer_lag=lag,
        last_error=last_error(probe.log_path, probe.log_offset),
    )


class Observer:
    """Looks at every process ``probes()`` lists every ``interval_s`` on one daemon thread;
    :meth:`get` returns the latest look."""

    def __init__(
        self,
        probes: Callable[[], list[Probe]],
        metrics_token: str | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.probes = probes
        self.metrics_token = metrics_token
        self.interval_s = interval_s
        self._seen: dict[str, Observation] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start looking (at once, then every ``interval_s``); a second call does nothing."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop looking."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    def get(self, name: str) -> Observation | None:
        """The latest look at ``name`` (None before the first)."""
        with self._lock:
            return self._seen.get(name)

    def observe_all(self) -> None:
        """Look at every process once now."""
        for probe in self.probes():
            if self._stop.is_set():
                return
            seen = observe(probe, self.metrics_token)
            with self._lock:
                self._seen[probe.name] = seen

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.observe_all()
            except Exception:
                # The status must outlive any one bad look.
                log.exception("observing the processes failed")
            self._stop.wait(self.interval_s)
