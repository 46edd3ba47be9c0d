"""The SDK compatibility tests: Segment's own libraries (Python, Node, analytics.js in
Chromium), unchanged, pointed at the session's ``stack`` (tests/conftest.py). What they need
beyond the virtualenv (node_modules, Chromium) is installed by ``make test``; when it is
missing the tests fail saying how to install it, they never skip."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="session")
def segment_analytics() -> ModuleType:
    """Segment's Python SDK (``segment-analytics-python``, module ``segment.analytics``)."""
    try:
        import segment.analytics
    except ImportError as exc:
        pytest.fail(
            f"Segment's Python SDK is not installed ({exc}): it is in the dev extra; "
            "run `make test` (or pip install -c constraints.txt -e '.[local,dev]')"
        )
    # Untyped (no py.typed): mypy sees Any.
    sdk: ModuleType = segment.analytics
    return sdk


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/sdk/node/node_modules with the pinned Segment packages, and node itself."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: install Node.js 20 or later")
    modules = NODE_DIR / "node_modules"
    for package in ("analytics-node", "analytics-next"):
        if not (modules / "@segment" / package / "package.json").is_file():
            pytest.fail(
                f"@segment/{package} is not installed in {NODE_DIR}: run `make test` "
                "(or `npm ci` in tests/sdk/node)"
            )
    return modules


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser that runs analytics.js."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "no Chromium on PATH: `make test` installs it when run as root; otherwise run "
        "`sudo apt-get install -y chromium` (Debian/Ubuntu)"
    )
