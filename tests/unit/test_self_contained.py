"""The repository stands alone: no file of the project points at folders outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Written in pieces so this file does not match itself.
OUTSIDE = ("../" + "shared", "/work/" + "shared")


def test_no_project_file_points_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split()
    found = []
    for name in tracked:
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        found += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert found == []
