"""The Dockerfile passes hadolint and the essentials (pinned bases, non-root, the lock, no
compiler in the final image, a build context holding what it copies); each check is then fed
a broken Dockerfile to prove it can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import dockerfile
from tests.deploy.conftest import REPO
from tests.deploy.tools import Tool

DOCKERFILE = REPO / "infra/docker/Dockerfile"
TEXT = DOCKERFILE.read_text()
IGNORE = (REPO / ".dockerignore").read_text()


def test_hadolint_finds_nothing(hadolint_tool: Tool) -> None:
    assert dockerfile.hadolint_problems(hadolint_tool, DOCKERFILE) == []


def test_the_essentials_hold() -> None:
    assert dockerfile.dockerfile_problems(TEXT) == []


def test_one_pinned_base_for_both_stages_and_a_numeric_user() -> None:
    instructions = dockerfile.parse(TEXT)
    bases = {i.arguments.split()[0] for i in instructions if i.keyword == "FROM"}
    assert bases == {"python:3.11.14-slim-bookworm"}
    users = [i.arguments for i in instructions if i.keyword == "USER"]
    assert users == ["10001:10001"]  # what the pods' runAsUser expects


def test_everything_copied_is_in_the_build_context() -> None:
    assert dockerfile.context_problems(TEXT, IGNORE, REPO) == []


def test_the_context_leaves_out_local_state_and_the_local_servers() -> None:
    patterns = dockerfile.ignore_patterns(IGNORE)
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "infra/local/stack.py"):
        assert dockerfile.ignored(path, patterns), path
    for path in ("services/identity/server.py", "protos/lodestar/v1/common.proto", "README.md"):
        assert not dockerfile.ignored(path, patterns), path
    assert dockerfile.ignored("services/identity/__pycache__/server.cpython-311.pyc", patterns)


# --- each check fails on a broken input ---------------------------------------------------


def line_of(text: str, start: str) -> int:
    """The number of the first line of ``text`` that starts with ``start``."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def broken(old: str, new: str) -> str:
    """The Dockerfile with one passage replaced (which must be there)."""
    assert old in TEXT, old
    return TEXT.replace(old, new)


@pytest.mark.parametrize(
    ("base", "problem"),
    [
        ("python:latest", "is neither a skaffold artifact nor pinned (no tag or latest)"),
        ("python", "is neither a skaffold artifact nor pinned (no tag or latest)"),
        ("python:3.11-slim", "has a floating tag '3.11-slim'"),
    ],
)
def test_an_unpinned_base_is_caught(base: str, problem: str) -> None:
    text = broken("FROM python:3.11.14-slim-bookworm AS runtime", f"FROM {base} AS runtime")
    assert any(problem in p for p in dockerfile.dockerfile_problems(text))


def test_a_digest_pinned_base_passes() -> None:
    digest = "python@sha256:" + "0" * 64
    text = broken("FROM python:3.11.14-slim-bookworm AS runtime", f"FROM {digest} AS runtime")
    assert dockerfile.dockerfile_problems(text) == []


def test_a_latest_tag_anywhere_is_caught() -> None:
    text = broken("# One image for every", "# Pull apache/kafka:latest. One image for every")
    assert dockerfile.dockerfile_problems(text) == ["line 1: uses the latest tag"]


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("USER root", "line {}: final USER is root"),
        ("USER 0:0", "line {}: final USER is root"),
        ("", "final stage has no USER: the image would run as root"),
    ],
)
def test_running_as_root_is_caught(user: str, problem: str) -> None:
    text = broken("USER 10001:10001", user)
    line = line_of(TEXT, "USER 10001:10001")
    assert dockerfile.dockerfile_problems(text) == [problem.format(line)]


def test_a_user_set_only_in_the_build_stage_is_caught() -> None:
    text = broken("USER 10001:10001\n", "").replace("WORKDIR /src", "USER 10001\nWORKDIR /src")
    assert dockerfile.dockerfile_problems(text) == [
        "final stage has no USER: the image would run as root"
    ]


def test_build_tools_in_the_final_image_are_caught() -> None:
    text = broken(
        "RUN python -m pip uninstall",
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc=12.2.0-14\n"
        "RUN python -m pip uninstall",
    )
    line = line_of(text, "RUN apt-get update")
    assert dockerfile.dockerfile_problems(text) == [f"line {line}: build tools in the final image"]


def test_dependencies_off_the_lock_are_caught() -> None:
    text = broken("pip install --no-cache-dir -c constraints.txt", "pip install --no-cache-dir")
    line = line_of(text, "RUN python -c")
    assert dockerfile.dockerfile_problems(text) == [f"line {line}: pip install off the lock"]


def test_no_command_is_caught() -> None:
    text = broken('ENTRYPOINT ["python", "-m"]\nCMD ["gateway"]\n', "")
    assert dockerfile.dockerfile_problems(text) == ["final stage has neither ENTRYPOINT nor CMD"]


def test_copying_what_the_context_lacks_is_caught() -> None:
    text = broken(
        "COPY gateway/ gateway/", "COPY gateway/ gateway/\nCOPY infra/ infra/\nCOPY web/ web/"
    )
    assert dockerfile.context_problems(text, IGNORE, REPO) == [
        f"line {line_of(text, 'COPY infra/')}: infra/ is excluded by .dockerignore",
        f"line {line_of(text, 'COPY web/')}: web/ does not exist",
    ]


def test_hadolint_flags_a_careless_dockerfile(hadolint_tool: Tool, tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python:latest\nUSER root\nRUN apt-get install -y gcc\nRUN pip install requests\n"
    )
    findings = "\n".join(dockerfile.hadolint_problems(hadolint_tool, careless))
    for rule in ("DL3007", "DL3002", "DL3008", "DL3013"):  # latest, root, unpinned apt, pip
        assert rule in findings
