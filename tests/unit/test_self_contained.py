"""The repository stands alone: no file of the project points at folders outside it (a
sibling checkout's shared folder, this machine's work or tool folders), and what the deploy
checks read ships inside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.deploy import skaffold

REPO = Path(__file__).resolve().parents[2]
# Written in pieces so this file does not match itself: absolute paths into this machine's
# work folders (any checkout there, the repo's own included: a clone lives elsewhere) and
# tool folders.
OUTSIDE = re.compile(
    "|".join(
        (
            r"(?<![\w.~-])/" + r"work/",
            r"/tmp/" + r"tools\b",
        )
    )
)
# A relative path that climbs: outside when, resolved from its file's folder, it leaves the repo.
CLIMBING = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-]+")


def outside_references(name: str, text: str) -> list[str]:
    """``file:line: match`` for every reference to a folder outside the repository."""
    folder = (REPO / name).parent
    found = [*OUTSIDE.finditer(text)]
    found += [
        m
        for m in CLIMBING.finditer(text)
        if not (folder / m.group(0)).resolve().is_relative_to(REPO)
    ]
    return [
        f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
        for match in sorted(found, key=lambda m: m.start())
    ]


def test_no_project_file_points_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    found = []
    for name in filter(None, tracked):
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        found += outside_references(name, path.read_text(errors="ignore"))
    assert found == []


def test_the_check_sees_each_kind_of_outside_path() -> None:
    samples = {
        "See ../../notes/DESIGN.md": 1,
        "See ../README.md and ../infra/k8s/base": 0,
        "schema = '/" + "work/elsewhere/skaffold.json'": 1,
        "cd /" + "work/main && make": 1,
        "PATH=/tmp/" + "tools/bin:$PATH": 1,
        "/tmp/kafka-logs and https://example.com/work/x and ~/work/notes": 0,
    }
    for text, count in samples.items():
        assert len(outside_references("docs/sample.md", text)) == count, text


def test_the_deploy_checks_read_their_schema_from_the_repository() -> None:
    schema = skaffold.find_schema({})
    assert schema.resolve().is_relative_to(REPO)
    assert schema == skaffold.PROJECT_SCHEMA
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(schema.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tracked.returncode == 0, "the skaffold schema is not committed"
    skaffold.load_schema(schema)
