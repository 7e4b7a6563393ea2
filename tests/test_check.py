"""The student's local check: run like the grader, visible tests and the scan, in plain words."""
from __future__ import annotations

import subprocess

import nbformat
import pytest

from conftest import PYTHON, RELEASE, ROOT
from coursekit.examples import build, rewrite
from coursekit.config import Course

pytestmark = pytest.mark.slow


def check(notebook) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "coursekit", "check", str(notebook)], cwd=ROOT, capture_output=True, text=True)


def test_blank_release_says_what_to_fix():
    run = check(RELEASE)
    assert run.returncode == 1
    assert "FIX   test_linear (8 points): error: NotImplementedError" in run.stdout
    assert "Visible tests: 0 of 80 autograded points pass" in run.stdout


def test_complete_solution_with_a_forbidden_call_passes_its_tests_but_is_told(tmp_path):
    course = Course(ROOT)
    notebook = build(course, [rewrite("log_softmax", "def log_softmax(logits):\n    return logits.log_softmax(dim=1)")])
    path = tmp_path / course.notebook_name
    nbformat.write(notebook, path)
    run = check(path)
    assert "Visible tests: 80 of 80 autograded points pass" in run.stdout
    assert "FIX   cell" in run.stdout and "`logits.log_softmax(dim=1)`" in run.stdout
    assert run.returncode == 1
