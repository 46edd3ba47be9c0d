"""Fixtures of the deploy checks: the tools, each overlay rendered once, skaffold.yaml.

The kubectl and hadolint actually used are printed at the end of the run, so a reader of
the log knows which versions rendered and linted what.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from tests.deploy import skaffold, tools
from tests.deploy.tools import Manifest, Tool

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
USED: dict[str, Tool] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which kubectl and hadolint the deploy checks ran."""
    for name, tool in sorted(USED.items()):
        terminalreporter.write_line(f"deploy checks used {name}: {tool.describe()}")


def need(name: str) -> Tool:
    """A tool, remembered for the summary; the run fails (never skips) without it."""
    try:
        tool = tools.kubectl() if name == "kubectl" else tools.hadolint()
    except tools.ToolMissingError as error:
        pytest.fail(str(error))
    USED[name] = tool
    return tool


@pytest.fixture(scope="session")
def kubectl_tool() -> Tool:
    """kubectl, preferably the pinned one from the virtualenv."""
    return need("kubectl")


@pytest.fixture(scope="session")
def hadolint_tool() -> Tool:
    """hadolint, preferably the pinned one from the virtualenv."""
    return need("hadolint")


@pytest.fixture(scope="session")
def rendered(kubectl_tool: Tool) -> dict[str, list[Manifest]]:
    """Each overlay rendered once by ``kubectl kustomize``."""
    return {o: tools.render(kubectl_tool, REPO / "infra/k8s/overlays" / o) for o in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Each overlay in turn."""
    return str(request.param)


@pytest.fixture
def objects(rendered: dict[str, list[Manifest]], overlay: str) -> list[Manifest]:
    """One overlay's objects, a fresh copy a test may change to break them."""
    return copy.deepcopy(rendered[overlay])


@pytest.fixture(scope="session")
def skaffold_documents() -> list[Manifest]:
    """The YAML documents of skaffold.yaml."""
    text = (REPO / "skaffold.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def skaffold_schema() -> dict[str, object]:
    """The skaffold v4beta13 JSON schema (the project's own unless one is named); the run
    fails when it cannot be found."""
    try:
        path = skaffold.find_schema(os.environ)
    except skaffold.SchemaMissingError as error:
        pytest.fail(str(error))
    return skaffold.load_schema(path)


@pytest.fixture(scope="session")
def image(skaffold_documents: list[Manifest]) -> str:
    """The project image: skaffold's one artifact, which every Lodestar process runs."""
    images = skaffold.artifact_images(skaffold_documents)
    assert len(images) == 1, f"expected one image for every process, skaffold builds {images}"
    return images.pop()
