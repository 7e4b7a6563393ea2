"""The whole grader on a class: the example submissions and a catalogue of attacks, graded in one
parallel batch in the real sandbox. Each asserts its exact score and what its feedback names."""
from __future__ import annotations

import csv
import json
import os
import shutil

import nbformat
import pytest

from attack_cases import EXPECTED
from conftest import ROOT
from coursekit.config import Course
from coursekit.examples import EXAMPLES, build
from coursekit.grading.batch import grade_class
from coursekit.grading.pipeline import tree_digest
from support import FULL

pytestmark = pytest.mark.slow

LINKS = {"links_to_the_solution": "../../../source/classifier_from_scratch/classifier_from_scratch.ipynb",
         "links_to_another_student": "../../alice_complete/classifier_from_scratch/classifier_from_scratch.ipynb",
         "links_to_etc_passwd": "/etc/passwd"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, root / folder)
    shutil.copy(ROOT / "course.toml", root / "course.toml")
    course = Course(root)
    shutil.copytree(ROOT / "submitted", root / "submitted")
    for name, case in EXPECTED.items():
        folder = course.submission(name)
        if case.edits:
            folder.mkdir(parents=True)
            nbformat.write(build(course, case.edits), folder / course.notebook_name)
        for filename, content in case.files.items():
            (folder / filename).write_bytes(content())
    shutil.copytree(ROOT / "release" / "classifier_from_scratch", course.submission("release_unmodified"))
    odd_name = _mkdir(course.submission("zoë o'brien (late)"))
    nbformat.write(build(course, []), odd_name / course.notebook_name)
    _mkdir(course.submission("empty_folder"))
    shutil.copytree(course.submission("alice_complete"), course.submission("symlink_to_outside"))
    os.symlink(ROOT / "source", course.submission("symlink_to_outside") / "answers")
    plant_links(course)
    nested = _mkdir(course.submission("deeply_nested_json")) / course.notebook_name
    nested.write_text('{"cells": ' + "[" * 200_000 + "]" * 200_000 + "}")
    before = tree_digest(root / "submitted")
    results = grade_class(course, jobs=2, require_sandbox=True, progress=False)
    assert tree_digest(root / "submitted") == before, "grading must never modify a submission"
    return course, {r.student: r for r in results}


def plant_links(course):
    solution = course.root / "source" / course.assignment / course.notebook_name
    for name, target in LINKS.items():
        os.symlink(target, _mkdir(course.submission(name)) / course.notebook_name)
    _mkdir(course.submission("links_the_assignment_folder").parent)
    os.symlink(solution.parent, course.submission("links_the_assignment_folder"))
    os.link(solution, _mkdir(course.submission("hard_links_the_solution")) / course.notebook_name)


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_every_example_is_covered():
    assert set(EXAMPLES) <= set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_outcome(graded, name):
    course, results = graded
    result = results[name]
    report = json.loads((course.root / "autograded" / name / course.assignment / "results.json").read_text())
    text = json.dumps(report)
    assert report["score"] == result.score == EXPECTED[name].score, report["output"]
    rules = {finding.rule for finding in result.findings}
    for mention in EXPECTED[name].mentions:
        if mention.startswith("rule:"):
            assert mention[5:] in rules, f"{name}: no {mention[5:]} finding in {rules}"
        else:
            assert mention in text or mention in executed_text(result), f"{mention!r} not in the feedback of {name}"
    for forged in EXPECTED[name].absent:
        assert result.executed is not None, f"{name}: no executed notebook"
        assert forged not in text and forged not in json.dumps(result.executed), f"{name}: {forged!r} shown"
    assert (course.root / "feedback" / name / course.assignment / "classifier_from_scratch.html").is_file()


def executed_text(result) -> str:
    if result.executed is None:
        return ""
    return json.dumps([cell.get("outputs", []) for cell in result.executed.cells])


def test_no_secret_reaches_a_submission(graded):
    course, results = graded
    for name in ("reads_outside_files", "lists_other_students", "symlink_to_outside"):
        text = executed_text(results[name])
        assert "BEGIN HIDDEN TESTS" not in text and "alice_complete" not in text


def test_results_json_follows_gradescope_schema(graded):
    course, _ = graded
    report = json.loads(
        (course.root / "autograded" / "alice_complete" / course.assignment / "results.json").read_text()
    )
    assert report["score"] == sum(t["score"] for t in report["tests"]) == FULL
    for test in report["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed") and test["visibility"] == "visible"
    assert report["extra_data"]["pending_manual"] == {
        "derivation_answer": 5,
        "regression_answer": 5,
        "comparison_answer": 6,
        "reflection_answer": 4,
    }


def test_grades_csv_has_a_row_per_student_and_a_column_per_graded_part(graded):
    course, results = graded
    with open(course.root / "grades.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["student"] for row in rows} == set(results)
    alice = next(row for row in rows if row["student"] == "alice_complete")
    assert alice["test_linear"] == "8" and alice["regression_answer"] == "" and alice["autograded_total"] == "80"
    assert (course.root / "feedback" / "class_summary.png").stat().st_size > 1000


def test_forged_graded_cell_earns_nothing(graded):
    """The cell the student marked as graded (100 points) adds no points possible, and the autograded notebook
    that nbgrader and formgrader read keeps it without the forged metadata (test_sanitize checks why, fast)."""
    course, results = graded
    report = json.loads(course.results_file("forges_a_graded_cell").read_text())
    assert sum(test["max_score"] for test in report["tests"]) == results["forges_a_graded_cell"].max_autograded == FULL
    kept = nbformat.read(course.executed_notebook("forges_a_graded_cell"), as_version=4)
    bonus = [cell for cell in kept.cells if cell.source == "bonus = 1"]
    assert len(bonus) == 1 and "nbgrader" not in bonus[0].metadata
    assert "test_bonus" not in json.dumps(report) + nbformat.writes(kept)


def measured(result, grade_id: str) -> float:
    """The value the grader measured for a model's part (its test MSE or accuracy, the first measured)."""
    part = next(t for t in result.parts if t.grade_id == grade_id)
    return next(line.measured for line in part.lines if line.measured is not None)


def test_reference_solution_clears_the_course_bars(graded):
    """The issue's bars for the reference solution, as the grader itself measures them."""
    _, results = graded
    alice = results["alice_complete"]
    assert measured(alice, "test_regression") <= 3.6
    assert measured(alice, "test_logistic") >= 0.90
    assert measured(alice, "test_mlp") >= 0.93


def test_laundered_weights_sit_far_above_the_retraining_tolerance(graded):
    from coursekit.grading.retrain import RETRAIN_RTOL

    _, results = graded
    laundered = [
        line.measured
        for name in ("sgd_step_puts_weights_from_elsewhere", "train_ends_on_weights_from_elsewhere")
        for part in results[name].parts
        for line in part.lines
        if line.condition and not line.passed and line.measured is not None
    ]
    print(f"smallest difference between a laundered model and its trusted retraining: {min(laundered):.3g} "
          f"(tolerance {RETRAIN_RTOL:g})")
    assert len(laundered) == 2 and min(laundered) >= 10 * RETRAIN_RTOL
