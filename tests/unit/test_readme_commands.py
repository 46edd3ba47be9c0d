"""README commands work as printed from a fresh clone after ``make run`` / ``make test``, with
no virtualenv activated: Python runs as ``.venv/bin/python``, every repository file a
command or code span names exists, and every command line the README shows answers
``--help`` (or, where it has none and is cheap, runs)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from services.recommendation.catalog import CSV_COLUMNS, read_catalog
from tests.support.readme import REPO, code_blocks, inline_code, readme_text

# Blocks in these languages are programs, not shell commands.
NOT_SHELL = {"python", "js", "graphql", "json"}
# A bare interpreter or tool that only works with the virtualenv activated.
BARE = re.compile(r"(?<![\w./-])(python3?(?:\.\d+)?|pytest|pip3?|ruff|mypy)(?=\s|$)")
# Inside a container (`kubectl exec ... -- python ...`) the image's python is the right one.
IN_CONTAINER = re.compile(r"\bkubectl\b.*\bexec\b.*\s--\s")
VENV_MODULE = re.compile(r"\.venv/bin/python -m ([\w.]+)((?: [a-z][\w-]*)?)")
# Commands whose --help is not theirs to give but that are cheap and harmless to run as shown.
RUN_AS_PRINTED = {("gateway", "sdl")}
# Top-level folders and files of the repository a path in the README may start with.
TRACKED_TOP = {
    path.name for path in REPO.iterdir() if not path.name.startswith(".") or path.name == ".ci"
} - {"build"}


def shell_lines() -> list[tuple[int, str]]:
    """Every line of the README's shell blocks, and every inline code span, with its line."""
    found = [
        (block.line + offset, line)
        for block in code_blocks(readme_text())
        if block.language not in NOT_SHELL
        for offset, line in enumerate(block.lines)
    ]
    return found + inline_code(readme_text())


def test_no_command_needs_an_activated_virtualenv() -> None:
    bare = []
    for number, line in shell_lines():
        for match in BARE.finditer(line):
            if IN_CONTAINER.search(line[: match.start()]):
                continue
            bare.append(f"README.md:{number}: {line.strip()[:120]}")
    assert bare == [], "use .venv/bin/<tool> (make run / make test create .venv):\n" + "\n".join(
        bare
    )


def named_paths() -> list[tuple[int, str]]:
    """Repository paths the README names in commands and code spans (templates such as
    ``services/<name>/``, globs and generated folders left out)."""
    found = []
    for number, line in shell_lines():
        for raw in re.split(r"[\s'\"=(),]+", line):
            word = raw.rstrip(".:;`")
            top = word.split("/", 1)[0]
            if "/" not in word and "." not in word:
                continue
            if top not in TRACKED_TOP or re.search(r"[<>{}*$…]|\.\.\.", word):
                continue
            found.append((number, word))
    return found


def test_every_repository_file_the_readme_names_exists() -> None:
    paths = named_paths()
    assert "examples/catalog.csv" in {p for _, p in paths}, "the catalog example is not named"
    missing = [f"README.md:{n}: {p}" for n, p in paths if not (REPO / p).exists()]
    assert missing == []


def test_the_catalog_the_readme_imports_is_shipped_and_parses() -> None:
    commands = [
        shlex.split(line.split("#", 1)[0])
        for _, line in shell_lines()
        if "services.recommendation import-catalog" in line
    ]
    assert commands, "the README shows no import-catalog command"
    for command in commands:
        assert command[:4] == [
            ".venv/bin/python",
            "-m",
            "services.recommendation",
            "import-catalog",
        ]
        path = REPO / command[4]
        assert path.is_file(), f"{command[4]} is not in the repository"
        header = path.read_text(encoding="utf-8").splitlines()[0]
        assert header.split(",") == list(CSV_COLUMNS)
        items = read_catalog(path)
        assert 15 <= len(items) <= 40
        assert len({item.item_id for item in items}) == len(items)
        priced = [item.price for item in items if item.price is not None]
        assert len(priced) >= len(items) - 2
        assert all(1 <= price <= 5_000 for price in priced)
        assert all(item.name and item.category for item in items)


def cli_commands() -> list[tuple[str, str]]:
    """Every ``.venv/bin/python -m <module> [<command>]`` the README shows."""
    found: dict[tuple[str, str], None] = {}
    for _, line in shell_lines():
        for module, command in VENV_MODULE.findall(line):
            found[(module, command.strip())] = None
    return list(found)


def test_the_readme_shows_its_command_lines() -> None:
    shown = set(cli_commands())
    for expected in [
        ("services.recommendation", "import-catalog"),
        ("services.rotate_keys", ""),
        ("infra.local", "status"),
        ("gateway", "keys"),
    ]:
        assert expected in shown, expected


def test_every_command_line_the_readme_shows_answers() -> None:
    runs = {}
    for module, command in cli_commands():
        words = [command] if command else []
        if (module, command) not in RUN_AS_PRINTED:
            words.append("--help")
        runs[(module, command)] = subprocess.Popen(
            [sys.executable, "-m", module, *words],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    failed = []
    for (module, command), process in runs.items():
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            failed.append(f"{module} {command}: still running after 120 s")
            continue
        shown = f"{module} {command}".strip()
        if process.returncode != 0:
            failed.append(f"{shown}: exit {process.returncode}: {err.strip()[-300:]}")
        elif (module, command) not in RUN_AS_PRINTED and "usage:" not in out:
            failed.append(f"{shown}: --help printed no usage")
    assert failed == []


@pytest.mark.parametrize("line", ["python -m services.recommendation train", "pytest -q"])
def test_a_bare_command_is_caught(line: str) -> None:
    assert BARE.search(line)


def test_an_in_container_command_is_allowed() -> None:
    line = "kubectl -n lodestar exec deploy/gateway -- python -m gateway keys create"
    match = BARE.search(line)
    assert match is not None
    assert IN_CONTAINER.search(line[: match.start()])
