"""``python -m infra.local status``: the launcher's status file, printed as a table while
the launcher runs, and a clear word when none does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.local.status import print_status, write_status
from infra.local.supervisor import ProcessStatus


class FakeStack:
    def status(self) -> list[ProcessStatus]:
        return [
            ProcessStatus("profile", "service", 4242, "backing off", 3, 2, "signal SIGKILL", 2.0),
            ProcessStatus("kafka", "server", 4243, "running", 0, 0, "", 0.0),
        ]


def test_the_running_launchers_processes_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "status.json"
    write_status(path, FakeStack())
    assert print_status(path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [
        "name",
        "kind",
        "pid",
        "state",
        "restarts",
        "crashes",
        "last",
        "exit",
    ]
    assert lines[2].split() == [
        "profile", "service", "4242", "backing", "off", "(2.0", "s)", "3", "2", "signal", "SIGKILL"
    ]  # fmt: skip
    assert lines[3].split() == ["kafka", "server", "4243", "running", "0", "0", "-"]


def test_no_launcher_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "status.json"
    assert print_status(path) == 1
    assert "no launcher is running" in capsys.readouterr().out
    # A file left by a launcher that was killed: its pid is gone.
    path.write_text(json.dumps({"launcher_pid": 2**22 + 1, "processes": []}))
    assert print_status(path) == 1
    assert "ended" in capsys.readouterr().out
