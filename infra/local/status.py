"""The launcher's status file and ``python -m infra.local status``: each process of the
running stack with its pid, state (running / restarting / backing off / stopped / failed),
health (ready / not ready), restarts, crashes, consumer lag, last exit and last error. The
launcher rewrites the file every half second; health, lag and errors come from the stack's
observer (infra/local/observe.py), which the first write starts and which looks every
few seconds, so printing the status only reads the file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from infra.local.supervisor import ProcessStatus

COLUMNS = (
    "name",
    "kind",
    "pid",
    "state",
    "health",
    "restarts",
    "crashes",
    "lag",
    "last exit",
    "last error",
)


class HasStatus(Protocol):
    """What the status file is written from (a Stack)."""

    def status(self) -> list[ProcessStatus]:
        """Every process's row."""
        ...

    def observe(self) -> None:
        """Start refreshing health, lag and last errors in the background (idempotent)."""
        ...


def write_status(path: Path, stack: HasStatus) -> None:
    """Replace ``path`` with the stack's status (written aside, then renamed: a reader never
    sees half a file). The first write starts the stack's observer."""
    stack.observe()
    document = {
        "launcher_pid": os.getpid(),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "processes": [asdict(row) for row in stack.status()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps(document, indent=1))
    aside.replace(path)


def format_status(rows: Sequence[dict[str, Any]]) -> str:
    """A table of status rows (as written by :func:`write_status`)."""
    table = [COLUMNS]
    for row in rows:
        state = row["state"]
        if row.get("next_start_in_s"):
            state = f"{state} ({row['next_start_in_s']} s)"
        lag = row.get("consumer_lag")
        table.append(
            (
                row["name"],
                row["kind"],
                str(row["pid"] or "-"),
                state,
                row.get("health") or "-",
                str(row["restarts"]),
                str(row["crashes"]),
                "-" if lag is None else str(lag),
                row["last_exit"] or "-",
                row.get("last_error") or "-",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def print_status(path: Path) -> int:
    """Print the running launcher's status; 1 when no launcher runs (or the file is stale)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"no launcher is running (no status in {path})")
        return 1
    pid = int(document.get("launcher_pid", 0))
    if pid <= 0 or not _alive(pid):
        print(f"no launcher is running (the one of {path} ended)")
        return 1
    print(f"launcher pid {pid}, as of {document.get('updated', '?')}")
    print(format_status(document.get("processes", [])))
    return 0
