"""The assignment notebook: its rubric, the generated release (up to date, nothing leaked), the
example submissions, and grading by nbgrader itself."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import RELEASE, ROOT, SOURCE
from coursekit.examples import MALFORMED, write_examples
from coursekit.grading.checks import CHECKS
from coursekit.grading.pipeline import Course
from coursekit.grading.rubric import load_rubric, nbgrader_meta

CONTRACT_TESTS = {"Linear": "test_linear", "ReLU": "test_relu", "Sequential": "test_sequential",
                  "log_softmax": "test_log_softmax", "MSELoss": "test_mse_loss",
                  "CrossEntropyLoss": "test_cross_entropy_loss", "sgd_step": "test_sgd_step", "train": "test_train",
                  "accuracy": "test_accuracy", "regression_model": "test_regression",
                  "logistic_model": "test_logistic", "mlp_model": "test_mlp"}


def test_points_add_up_to_a_round_total():
    rubric = load_rubric(SOURCE)
    assert rubric.total == 100
    assert sum(c.points for c in rubric.autograded) == 80 and sum(c.points for c in rubric.manual) == 20


def test_every_contract_name_has_hidden_tests_worth_points(source_notebook):
    cells = {nbgrader_meta(c).get("grade_id"): c for c in source_notebook.cells}
    for name, grade_id in CONTRACT_TESTS.items():
        cell = cells[grade_id]
        assert nbgrader_meta(cell)["points"] > 0 and name in cell.source
        assert "### BEGIN HIDDEN TESTS" in cell.source, f"{grade_id} has no hidden tests"


def test_every_autograded_cell_has_a_trusted_check():
    assert {c.grade_id for c in load_rubric(SOURCE).autograded} == set(CHECKS)


def test_notebook_is_organised_in_the_five_parts(source_notebook):
    headings = [line for c in source_notebook.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert [h.split(":")[0] for h in headings[:6]] == [f"## Part {n}" for n in range(6)]


def solution_lines(notebook) -> set[str]:
    """Distinctive lines written inside solution regions (those not also given outside them)."""
    region = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
    provided = "\n".join(region.sub("", c.source) for c in notebook.cells)
    lines = set()
    for cell in notebook.cells:
        for answer in region.findall(cell.source):
            lines |= {line.strip() for line in answer.splitlines()
                      if len(line.strip()) > 15 and line.strip() not in provided}
    return lines


def test_release_leaks_no_solution_and_no_hidden_test(source_notebook):
    text = RELEASE.read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and "_g = torch.Generator" not in text
    leaked = [line for line in solution_lines(source_notebook) if line in text]
    assert len(solution_lines(source_notebook)) > 50 and leaked == []


def course_copy(tmp_path: Path) -> Course:
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    return Course(tmp_path)


def test_release_is_up_to_date_with_source(tmp_path):
    course = course_copy(tmp_path)
    shutil.rmtree(tmp_path / "release")
    run = subprocess.run([sys.executable, "-m", "coursekit", "--root", str(tmp_path), "release"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert course.release_notebook.read_text() == RELEASE.read_text(), "release/ is stale: run `make release`"


def test_example_submissions_are_up_to_date(tmp_path):
    course = course_copy(tmp_path)
    for path in write_examples(course):
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `python -m coursekit examples`"
    assert (ROOT / "submitted" / MALFORMED[0]).is_dir()


@pytest.mark.slow
def test_nbgrader_autograde_gives_full_points_to_the_source_and_zero_to_the_release(tmp_path):
    from nbgrader.api import Gradebook

    course_copy(tmp_path)
    for student, notebook in (("alice", SOURCE), ("bob", RELEASE)):
        folder = tmp_path / "submitted" / student / "classifier_from_scratch"
        folder.mkdir(parents=True)
        shutil.copy(notebook, folder)
    scripts = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"}
    for command in (["generate_assignment", "classifier_from_scratch", "--force"],
                    ["autograde", "classifier_from_scratch", "--force"]):
        run = subprocess.run([str(scripts / "nbgrader"), *command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        alice = gradebook.find_submission("classifier_from_scratch", "alice")
        bob = gradebook.find_submission("classifier_from_scratch", "bob")
        assert (alice.code_score, alice.max_code_score) == (80, 80)
        assert bob.code_score == 0
        assert alice.max_score == 100


def test_reference_solution_uses_only_tensor_primitives():
    from coursekit.examples import solved
    from coursekit.grading.sanitize import sanitize
    from coursekit.grading.scan import scan_cells

    release = nbformat.read(RELEASE, as_version=4)
    clean = sanitize(solved(Course(ROOT)), release)
    assert scan_cells([(c.index, c.source) for c in clean.editable]) == []
