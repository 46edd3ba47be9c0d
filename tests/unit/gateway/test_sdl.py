"""The committed SDL (``gateway/schema.graphql``) is the schema the gateway serves: a change
to the API shows up as a reviewed diff of that file, never silently."""

from __future__ import annotations

import subprocess
import sys

from gateway.sdl import COMMITTED, current_sdl


def test_the_committed_sdl_is_the_served_schema() -> None:
    assert COMMITTED.read_text() == current_sdl(), (
        "the schema changed: run `.venv/bin/python -m gateway sdl > gateway/schema.graphql` "
        "and review the diff"
    )


def test_the_sdl_command_prints_it() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "gateway", "sdl"], capture_output=True, text=True, check=True
    ).stdout
    assert printed == COMMITTED.read_text()
    assert "customer(by: CustomerLookup!): Customer" in printed
