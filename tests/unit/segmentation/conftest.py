"""The published CDNOW data, read from the installed Lifetimes distribution (a data-only
dependency: see data-requirements.txt). The package is located, never imported, because its
import needs dependencies we do not install."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cdnow_dir() -> Path:
    """The folder holding CDNOW_master.txt, CDNOW_sample.txt and the published summaries."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("Lifetimes is not installed: run `make unit` (data-requirements.txt)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    assert (folder / "CDNOW_sample.txt").is_file()
    return folder
