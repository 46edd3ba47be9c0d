"""Checks of infra/docker/Dockerfile and .dockerignore: hadolint, plus the essentials the
issue asks for, asserted directly so they hold whatever hadolint's rules become: every base
pinned, no ``latest``, a non-root final user, dependencies only from the lock, no compiler
in the final image, and every COPY source present in the build context."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.manifests import image_problem
from tests.deploy.tools import Tool, run

BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|musl-dev|libc6?-dev)\b")
ROOT_USERS = {"root", "0"}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str
    line: int


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile; comments and blank lines dropped."""
    instructions = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        start = start if pending else number
        pending += (
            " " + stripped.removesuffix("\\").strip() if pending else stripped.removesuffix("\\")
        )
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = ""
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions grouped by build stage (each starts with FROM)."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def base_problems(instructions: list[Instruction]) -> list[str]:
    """Every base image not built in an earlier stage is pinned (exact tag or digest)."""
    problems = []
    names: set[str] = set()
    for instruction in (i for i in instructions if i.keyword == "FROM"):
        words = [w for w in instruction.arguments.split() if not w.startswith("--")]
        image = words[0] if words else ""
        if image not in names and image != "scratch":
            problem = image_problem(image, ())
            problems += [f"line {instruction.line}: base {problem}"] if problem else []
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    return problems


def final_stage_problems(instructions: list[Instruction]) -> list[str]:
    """The image that runs: a non-root USER, no build tools installed, a command."""
    final = stages(instructions)[-1] if stages(instructions) else []
    users = [i for i in final if i.keyword == "USER"]
    problems = []
    if not users:
        problems.append("final stage has no USER: the image would run as root")
    elif users[-1].arguments.split(":")[0] in ROOT_USERS:
        problems.append(f"line {users[-1].line}: final USER is root")
    for instruction in final:
        if instruction.keyword == "RUN" and BUILD_TOOLS.search(instruction.arguments):
            problems.append(f"line {instruction.line}: build tools in the final image")
    if not any(i.keyword in {"ENTRYPOINT", "CMD"} for i in final):
        problems.append("final stage has neither ENTRYPOINT nor CMD")
    return problems


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a RUN line, split at ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def lock_problems(instructions: list[Instruction]) -> list[str]:
    """Every ``pip install`` resolves through the lock (-c constraints.txt) or installs
    nothing but the project itself (--no-deps)."""
    problems = []
    for instruction in (i for i in instructions if i.keyword == "RUN"):
        for words in shell_commands(instruction.arguments):
            if any(w.endswith("pip") for w in words) and "install" in words:
                locked = "-c" in words or "--constraint" in words or "--no-deps" in words
                problems += [] if locked else [f"line {instruction.line}: pip install off the lock"]
    return problems


def latest_problems(text: str) -> list[str]:
    """No ``:latest`` anywhere, comments included (they get copied)."""
    return [
        f"line {number}: uses the latest tag"
        for number, line in enumerate(text.splitlines(), start=1)
        if re.search(r":latest\b", line)
    ]


def dockerfile_problems(text: str) -> list[str]:
    """All the essentials at once."""
    instructions = parse(text)
    return (
        base_problems(instructions)
        + final_stage_problems(instructions)
        + lock_problems(instructions)
        + latest_problems(text)
    )


# --- build context -------------------------------------------------------------------------


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last matching
    pattern wins, ``!`` re-includes, and excluding a directory excludes what is in it."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, v) for p in prefixes for v in variants):
            result = not negate
    return result


def ignore_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file."""
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def context_problems(dockerfile: str, dockerignore: str, context: Path) -> list[str]:
    """Every COPY/ADD source (not from another stage) exists and is in the build context."""
    patterns = ignore_patterns(dockerignore)
    problems = []
    for instruction in parse(dockerfile):
        if instruction.keyword not in {"COPY", "ADD"} or "--from=" in instruction.arguments:
            continue
        words = [w for w in shlex.split(instruction.arguments) if not w.startswith("--")]
        for source in words[:-1]:
            if not (context / source).exists():
                problems.append(f"line {instruction.line}: {source} does not exist")
            elif ignored(source, patterns):
                problems.append(f"line {instruction.line}: {source} is excluded by .dockerignore")
    return problems


def hadolint_problems(tool: Tool, dockerfile: Path) -> list[str]:
    """hadolint's findings (any level), one per line."""
    done = run(tool.path, "--no-color", str(dockerfile))
    if done.returncode == 0:
        return []
    return (done.stdout + done.stderr).strip().splitlines() or [f"hadolint exit {done.returncode}"]
