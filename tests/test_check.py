"""The student's local check: run like the grader, visible tests and the scan, in plain words."""
from __future__ import annotations

import os
import subprocess

import nbformat
import pytest

from conftest import PYTHON, RELEASE, ROOT, SOURCE
from coursekit.config import Course
from coursekit.examples import build, rewrite
from coursekit.grading.bubblewrap import Completed
from coursekit.grading.execute import Execution
from coursekit.grading.policy import Violation
from coursekit.grading.record import Submission
from coursekit.grading.rubric import nbgrader_meta
from coursekit.grading.sanitize import sanitize
from coursekit.in_sandbox.protocol import OK, RunLog, Status
from coursekit.local_check import print_report


def check(notebook) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "coursekit", "check", str(notebook)], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.slow
def test_blank_release_says_what_to_fix():
    run = check(RELEASE)
    assert run.returncode == 1
    assert "FIX   test_linear (8 points): error: NotImplementedError" in run.stdout
    assert "Visible tests: 0 of 80 autograded points pass" in run.stdout


@pytest.mark.slow
def test_complete_solution_with_a_forbidden_call_passes_its_tests_but_is_told(tmp_path):
    course = Course(ROOT)
    notebook = build(course, [rewrite("log_softmax", "def log_softmax(logits):\n    return logits.log_softmax(dim=1)")])
    path = tmp_path / course.notebook_name
    nbformat.write(notebook, path)
    run = check(path)
    from coursekit.grading.rubric import load_rubric
    from coursekit.grading.score import costed_parts

    points = {c.grade_id: c.points for c in load_rubric(SOURCE).autograded}
    lost = costed_parts([Violation(("log_softmax",), 0, None, "")])
    kept = sum(points.values()) - sum(points[grade_id] for grade_id in lost)
    assert f"Visible tests: {kept:g} of 80 autograded points pass" in run.stdout, run.stdout  # as the grader costs it
    assert "FIX   cell " in run.stdout and "from the top (\"def log_softmax(logits):\")" in run.stdout
    assert "`logits.log_softmax(dim=1)`" in run.stdout and run.returncode == 1


def checked(statuses: dict[str, Status], violations: list) -> Submission:
    """The release notebook as the local check saw it run: every cell ok unless `statuses` (by grade_id)."""
    release = nbformat.read(RELEASE, as_version=4)
    clean = sanitize(release, release)
    ids = {index: nbgrader_meta(cell).get("grade_id") for index, cell in enumerate(clean.notebook.cells)}
    log = RunLog(cells={index: statuses.get(ids[index], OK) for index in ids})
    execution = Execution(Completed(0, 1.0, False, None, False, ""), log, clean.notebook, {}, {})
    return Submission("bob", RELEASE, clean=clean, execution=execution, violations=violations)


def index_of(submission: Submission, grade_id: str) -> int:
    return next(
        i for i, c in enumerate(submission.clean.notebook.cells) if nbgrader_meta(c).get("grade_id") == grade_id
    )


def test_a_violation_costs_in_the_check_what_it_costs_in_grading(capsys):
    from coursekit.grading.rubric import load_rubric
    from coursekit.grading.score import costed_parts

    submission = checked({}, [])
    train = index_of(submission, "train")
    violation = Violation(
        ("train",), train, 3, "`loss.backward` was called while your code ran: autograd is not allowed"
    )
    submission.violations = [violation]
    assert print_report(submission) == 1
    out = capsys.readouterr().out
    costed, points = costed_parts([violation]), {c.grade_id: c.points for c in load_rubric(SOURCE).autograded}
    lost = [line.split()[1] for line in out.splitlines() if line.startswith("  LOST")]
    assert lost and sorted(lost) == sorted(costed)  # test_train and the three models, as the grader costs them
    kept = sum(points.values()) - sum(points[grade_id] for grade_id in costed)
    assert f"Visible tests: {kept:g} of {sum(points.values()):g} autograded points pass" in out
    label = f'cell {train + 1} from the top ("def train(model, loss_fn, x, y, lr, epochs, batch_size, seed=0):")'
    assert f"  FIX   {label}, line 3: `loss.backward` was called" in out


def test_the_check_names_cells_as_jupyter_shows_them_and_repeats_nothing(capsys):
    submission = checked({"test_relu": Status("error", "AssertionError: wrong shape"),
                          "accuracy": Status("error", "NameError: x")}, [])
    assert print_report(submission) == 1
    out = capsys.readouterr().out
    accuracy = index_of(submission, "accuracy")
    first = submission.clean.notebook.cells[accuracy].source.splitlines()[0].strip()
    assert f'NOTE  cell {accuracy + 1} from the top ("{first[:80]}' in out
    assert out.count("wrong shape") == 1 and "  FIX   test_relu (" in out
    assert "cell 0" not in out


def test_make_check_reports_without_make_calling_it_an_error(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/bin/sh\ncase "$*" in *" check "*) echo "Visible tests: 0 of 80"; exit $CHECK_STATUS;; esac\n')
    fake.chmod(0o755)
    (venv / ".installed").touch()
    for status, make_status in ((1, 0), (0, 0), (2, 2)):
        run = subprocess.run(["make", "-s", "-C", str(ROOT), "check", f"VENV={venv}", "NB=x.ipynb"],
                             capture_output=True, text=True, env={**os.environ, "CHECK_STATUS": str(status)})
        assert (run.returncode != 0) == (make_status != 0) and "Visible tests: 0 of 80" in run.stdout
        assert ("Error" in run.stderr) == (make_status != 0), run.stderr
