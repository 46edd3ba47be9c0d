"""``python -m infra.local status``: the launcher's status file, printed as a table while
the launcher runs (with each process's health, consumer lag and last error), and a clear
word when none does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.local.status import print_status, write_status
from infra.local.supervisor import ProcessStatus


class FakeStack:
    def __init__(self) -> None:
        self.observing = False

    def observe(self) -> None:
        self.observing = True

    def status(self) -> list[ProcessStatus]:
        return [
            ProcessStatus("profile", "service", 4242, "backing off", 3, 2, "signal SIGKILL", 2.0),
            ProcessStatus("kafka", "server", 4243, "running", 0, 0, "", 0.0),
            ProcessStatus(
                "identity",
                "service",
                4244,
                "running",
                1,
                1,
                "exit code 1",
                0.0,
                health="not ready",
                consumer_lag=17,
                last_error="12:00:01 message dead-lettered",
            ),
        ]


def test_the_running_launchers_processes_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "status.json"
    stack = FakeStack()
    write_status(path, stack)
    # Writing the status file is what starts the health, lag and error looks.
    assert stack.observing
    assert print_status(path) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1]
    assert header.split() == [
        "name", "kind", "pid", "state", "health", "restarts", "crashes", "lag",
        "last", "exit", "last", "error",
    ]  # fmt: skip
    assert lines[2].split() == [
        "profile", "service", "4242", "backing", "off", "(2.0", "s)", "-", "3", "2", "-",
        "signal", "SIGKILL", "-",
    ]  # fmt: skip
    assert lines[3].split() == ["kafka", "server", "4243", "running", "-", "0", "0", "-", "-", "-"]
    identity = lines[4]
    assert identity.split()[:9] == [
        "identity", "service", "4244", "running", "not", "ready", "1", "1", "17"
    ]  # fmt: skip
    # Each cell starts under its heading.
    assert identity.index("not ready") == header.index("health")
    assert identity.index("17") == header.index("lag")
    assert identity.index("exit code 1") == header.index("last exit")
    assert identity.index("12:00:01 message dead-lettered") == header.index("last error")


def test_a_status_file_of_an_older_launcher_still_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "status.json"
    row = {"name": "wallet", "kind": "service", "pid": 7, "state": "running", "restarts": 0}
    row.update({"crashes": 0, "last_exit": "", "next_start_in_s": 0.0})
    path.write_text(json.dumps({"launcher_pid": os.getpid(), "processes": [row]}))
    assert print_status(path) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == [
        "wallet", "service", "7", "running", "-", "0", "0", "-", "-", "-"
    ]  # fmt: skip


def test_no_launcher_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "status.json"
    assert print_status(path) == 1
    assert "no launcher is running" in capsys.readouterr().out
    # A file left by a launcher that was killed: its pid is gone.
    path.write_text(json.dumps({"launcher_pid": 2**22 + 1, "processes": []}))
    assert print_status(path) == 1
    assert "ended" in capsys.readouterr().out
