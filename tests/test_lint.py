"""ruff and mypy find nothing, with the settings in pyproject.toml (ruff: E, W, F and I at 120 columns over
coursekit/, tests/ and bench/; mypy: coursekit/). A finding fails the test and is shown in its message."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    completed = run("ruff", "check", "--no-cache", "--output-format", "concise", "coursekit", "tests", "bench")
    assert completed.returncode == 0, f"ruff check found:\n{completed.stdout}{completed.stderr}"


@pytest.mark.slow  # about 40 s without mypy's cache (a fresh checkout, CI)
def test_mypy_finds_nothing():
    completed = run("mypy", "coursekit")
    assert completed.returncode == 0, f"mypy coursekit found:\n{completed.stdout}{completed.stderr}"
