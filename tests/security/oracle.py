"""The oracle of the hostile-input suite.

Every answer of a door is a 2xx, or a 4xx that names what is wrong; never a 5xx. Around a
run of cases: no process died, no new traceback or ERROR line in any log, nothing new on the
dead-letter topic (an accepted event lands), and a sentinel customer is unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from infra.local.stack import Stack
from services.platform import topics
from tests.support.kafka import committed_lag, end_offsets, eventually

# Status codes a door may answer with for a request it refuses.
CLIENT_ERRORS = range(400, 500)


def json_body(response: httpx.Response) -> Any:
    """The response's JSON, or None when it is not JSON."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _partial_batch(body: Any) -> bool:
    """A batch's answer that accepted its valid calls and names each one it dropped."""
    if not isinstance(body, dict) or body.get("success") is not True:
        return False
    rejected = body.get("rejected")
    return (
        isinstance(body.get("accepted"), int)
        and isinstance(rejected, list)
        and bool(rejected)
        and all(
            isinstance(r, dict)
            and isinstance(r.get("index"), int)
            and bool(r.get("code"))
            and bool(r.get("message"))
            for r in rejected
        )
    )


def ingest_problem(response: httpx.Response) -> str | None:
    """What is wrong with an ingest API answer, or None when it keeps the contract: a 200
    (for a batch, possibly naming the calls it dropped) or a 4xx naming the problem."""
    body = json_body(response)
    if response.status_code == 200:
        if body == {"success": True} or _partial_batch(body):
            return None
        return f"200 with body {response.text[:200]!r}"
    if response.status_code not in CLIENT_ERRORS:
        return f"status {response.status_code}: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
        return f"{response.status_code} without a named error: {response.text[:200]!r}"
    return None


def graphql_problem(response: httpx.Response) -> str | None:
    """What is wrong with a GraphQL answer, or None when it keeps the contract."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:200]!r}"
    body = json_body(response)
    if response.status_code in CLIENT_ERRORS and response.status_code != 400:
        # 401, 405, 413, 415: the body names the problem as a GraphQL error or plain text.
        return None if response.text.strip() else f"{response.status_code} with an empty body"
    if not isinstance(body, dict):
        return f"{response.status_code} answer is not a JSON object: {response.text[:200]!r}"
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if not code:
            return f"an error without extensions.code: {error!r:.200}"
        if code == "INTERNAL_SERVER_ERROR":
            return f"an internal error: {error!r:.200}"
    if response.status_code == 400 and not body.get("errors"):
        return "400 without errors"
    return None


def passkit_problem(response: httpx.Response) -> str | None:
    """What is wrong with a PassKit web service answer (Apple's protocol: 2xx, 304, 4xx)."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:200]!r}"
    if response.status_code in (400, 413) and not response.text.strip():
        return f"{response.status_code} without saying what is wrong"
    return None


@dataclass
class LogWatch:
    """Where each log file of the run ended when the watch started."""

    directory: Path
    offsets: dict[Path, int] = field(default_factory=dict)

    @classmethod
    def start(cls, directory: Path) -> LogWatch:
        """Remember the current end of every log file."""
        watch = cls(directory)
        for path in directory.glob("*.log"):
            watch.offsets[path] = path.stat().st_size
        return watch

    def new_lines(self) -> list[tuple[str, str]]:
        """``(file name, line)`` for every line written since the start."""
        lines = []
        for path in sorted(self.directory.glob("*.log")):
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                text = handle.read().decode("utf-8", "replace")
            lines += [(path.name, line) for line in text.splitlines() if line.strip()]
        return lines

    def faults(self) -> list[str]:
        """New lines that report a fault: a traceback, or a record at ERROR or above."""
        found = []
        for name, line in self.new_lines():
            level = ""
            if line.startswith("{"):
                try:
                    level = str(json.loads(line).get("level", ""))
                except json.JSONDecodeError:
                    level = ""
            if "Traceback (most recent call last)" in line or level in ("ERROR", "CRITICAL"):
                found.append(f"{name}: {line[:300]}")
        return found


# The consumer groups an ingested event passes through, and what they read.
PIPELINE = (
    ("identity", topics.EVENTS_RAW),
    ("profile", topics.EVENTS_RESOLVED),
    ("segmentation-events", topics.EVENTS_RESOLVED),
    ("recommendation", topics.EVENTS_RESOLVED),
    ("wallet-events", topics.EVENTS_RESOLVED),
    ("segmentation", topics.PROFILE_CHANGED),
    ("wallet-profiles", topics.PROFILE_CHANGED),
)


async def drained(stack: Stack, timeout_s: float = 90) -> None:
    """Wait until every consumer of the event path has committed all it was sent."""

    async def caught_up() -> bool:
        ends = {t: await end_offsets(stack.kafka_bootstrap, t) for t in {t for _, t in PIPELINE}}
        for group, topic in PIPELINE:
            if await committed_lag(stack.kafka_bootstrap, group, ends[topic]) != 0:
                return False
        return True

    await eventually(caught_up, timeout_s, "every consumer caught up", 0.5)


async def dead_letters(stack: Stack) -> int:
    """How many records the dead-letter topic holds."""
    return sum((await end_offsets(stack.kafka_bootstrap, topics.DEADLETTER)).values())


@dataclass
class Baseline:
    """What must not change while hostile input is sent."""

    stack: Stack
    logs: LogWatch
    dead_letters: int

    @classmethod
    async def take(cls, stack: Stack) -> Baseline:
        """Note the logs' ends and the dead-letter count now."""
        return cls(stack, LogWatch.start(stack.log_dir), await dead_letters(stack))

    async def problems(self) -> list[str]:
        """Everything the run broke: dead processes, faults in the logs, dead letters (once
        every consumer has caught up, so whatever was accepted has landed or failed)."""
        found = [f"{name} died" for name in self.stack.dead_processes()]
        if not found:
            await drained(self.stack)
        found += self.logs.faults()
        now = await dead_letters(self.stack)
        if now != self.dead_letters:
            found.append(f"{now - self.dead_letters} new records on the dead-letter topic")
        return found
