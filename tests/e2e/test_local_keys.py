"""The running local stack says where its PII keys are (``<log dir>/pii.env``, under
``make run`` ``.local/logs/pii.env``), and the README's rotation command, fed that file the
way the README says, reaches the stack's data with the right keys."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from typing import Any

import pytest

from infra.local.stack import PII_VARIABLES, ROOT
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


def read_env_file(text: str) -> dict[str, str]:
    """The assignments of the file, as ``sh`` would read them (values are shell-quoted)."""
    done = subprocess.run(
        ["sh", "-c", "set -a; . /dev/stdin; set +a; env -0"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    pairs = (item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    return {name: value for name, value in pairs if name.startswith("LODESTAR_")}


async def test_the_pii_keys_file_opens_the_running_stacks_data(platform: Platform) -> None:
    stack = platform.stack
    path = stack.pii_env_file
    assert path.is_file(), f"the stack wrote no {path.name}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = read_env_file(path.read_text())
    identity_env = stack.env_for("identity")
    for name in PII_VARIABLES:
        assert written[name] == identity_env[name], name
    if stack.mongo_mode != "shared":
        # One URI cannot name two servers: the file holds the keys only.
        assert "LODESTAR_MONGO_URI" not in written
        return
    assert written["LODESTAR_MONGO_URI"] == identity_env["LODESTAR_MONGO_URI"]

    # Something to count: an e-mail stored encrypted by identity and profile.
    tag = unique("keys").replace("-", "")
    await platform.known_customer(f"u{tag}", email=f"{tag}@keys.example")

    # As the README has it: source the file, then run the command (no other LODESTAR_*).
    env = {k: v for k, v in os.environ.items() if not k.startswith("LODESTAR_")}
    done = subprocess.run(  # noqa: ASYNC221 (the test waits for the command on purpose)
        [
            "sh",
            "-c",
            f'set -a; . "{path}"; set +a; exec "{sys.executable}" -m services.rotate_keys --check',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    report = lines[-1]
    assert report["left"] == 0, report
    assert report["unreadable"] == 0, report
    identity_checked = sum(
        line["checked"] for line in lines[:-1] if line.get("service") == "identity"
    )
    assert identity_checked >= 1, lines
