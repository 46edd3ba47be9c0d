"""``python -m infra.local evaluate-demo``: recommendation quality through a running stack is
the launcher's command (the service's own command line imports nothing from ``infra``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.local.__main__ import evaluate_demo_command

REPO = Path(__file__).resolve().parents[3]


def _run(module: str, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *words],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_it_says_when_no_stack_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert evaluate_demo_command(tmp_path, None, None, 0.25, 0) == 2
    error = capsys.readouterr().err
    assert error.startswith("evaluate-demo: error: ")
    assert "no running stack" in error
    assert "connection.json does not exist" in error


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--test-fraction", "1.5"], "'1.5' is not a fraction between 0 and 1"),
        (["--users", "0"], "'0' is not a whole number >= 1"),
    ],
)
def test_bad_flags_are_named(tmp_path: Path, flags: list[str], named: str) -> None:
    done = _run("infra.local", "evaluate-demo", "--log-dir", str(tmp_path), *flags)
    assert done.returncode == 2
    assert named in done.stderr


def test_the_recommendation_command_line_no_longer_offers_it() -> None:
    done = _run("services.recommendation", "evaluate", "--through-stack")
    assert done.returncode == 2
    assert "--through-stack" in done.stderr
