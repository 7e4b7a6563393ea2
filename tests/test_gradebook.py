"""Recording graded submissions in nbgrader's gradebook as nbgrader's autograde would."""
from __future__ import annotations

import shutil

import nbformat
import pytest

from coursekit.course.gradebook import ensure_assignment, open_gradebook, record_submission, student_totals
from coursekit.config import Course
from coursekit.grading.bubblewrap import Completed
from coursekit.grading.execute import Execution
from coursekit.grading.pipeline import Submission
from coursekit.grading.rubric import load_rubric
from coursekit.grading import score
from coursekit.in_sandbox.protocol import RunLog

from conftest import RELEASE, ROOT

NOTEBOOK = "classifier_from_scratch"
LATE = '\n[late]\ndue = "2026-12-04 23:59:00 UTC"\npolicy = "percent_per_day"\npercent_per_day = 10\n'


@pytest.fixture(scope="module")
def empty_gradebook(tmp_path_factory):
    """A course whose gradebook has the assignment (nbgrader's generate_assignment, run once)."""
    root = tmp_path_factory.mktemp("course")
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, root / folder)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    (root / "course.toml").write_text(LATE)
    ensure_assignment(Course(root))
    return root


@pytest.fixture
def course(empty_gradebook, tmp_path) -> Course:
    shutil.copytree(empty_gradebook, tmp_path / "course")
    return Course(tmp_path / "course")


def result(course: Course, student: str, fraction: float, executed=None) -> Submission:
    rubric = load_rubric(course.source_notebook)
    parts = [score.PartResult(c.grade_id, c.part, 0.0, c.points, pending=True) if not c.autograded
             else score.PartResult(c.grade_id, c.part, round(c.points * fraction, 2), c.points) for c in rubric.cells]
    course.submission(student).mkdir(parents=True, exist_ok=True)
    submission = Submission(student, course.submission(student) / course.notebook_name, parts=parts)
    if executed is not None:
        submission.execution = Execution(Completed(0, 0.0, False, None, False, ""), RunLog(), executed, {}, {})
    return submission


def grade_by_hand(course: Course, student: str, grade_id: str, score: float, comment: str = "") -> None:
    """What formgrader's grade and comment API handlers do."""
    with open_gradebook(course) as gradebook:
        grade = gradebook.find_grade(grade_id, NOTEBOOK, NOTEBOOK, student)
        grade.manual_score, grade.needs_manual_grade = score, False
        if comment:
            gradebook.find_comment(grade_id, NOTEBOOK, NOTEBOOK, student).manual_comment = comment
        gradebook.db.commit()


def test_auto_scores_are_recorded_and_written_answers_await_a_grader(course):
    record_submission(course, result(course, "alice", 1.0))
    with open_gradebook(course) as gradebook:
        grades = {g.name: g for g in gradebook.find_submission_notebook(NOTEBOOK, NOTEBOOK, "alice").grades}
        assert grades["test_linear"].auto_score == 8 and not grades["test_linear"].needs_manual_grade
        assert grades["regression_answer"].auto_score is None and grades["regression_answer"].needs_manual_grade
        assert gradebook.find_submission(NOTEBOOK, "alice").score == 80
    total = student_totals(course)["alice"]
    assert (total.total, total.max_score) == (80, 100)
    assert total.manual_pending == ["comparison_answer", "derivation_answer", "reflection_answer", "regression_answer"]


def test_regrading_updates_without_duplicates_and_keeps_manual_grades(course):
    record_submission(course, result(course, "alice", 1.0))
    grade_by_hand(course, "alice", "regression_answer", 5, "Good, but say why the scalar target fails.")
    record_submission(course, result(course, "alice", 0.5))
    with open_gradebook(course) as gradebook:
        assert len(gradebook.find_assignment(NOTEBOOK).submissions) == 1
        grade = gradebook.find_grade("regression_answer", NOTEBOOK, NOTEBOOK, "alice")
        assert grade.manual_score == 5 and grade.needs_manual_grade  # kept, and flagged for review as nbgrader does
        assert gradebook.find_grade("test_linear", NOTEBOOK, NOTEBOOK, "alice").auto_score == 4
    total = student_totals(course)["alice"]
    assert total.total == 45 and [m.comment for m in total.manual if m.score is not None] == \
        ["Good, but say why the scalar target fails."]


def test_late_penalty_is_recorded_and_follows_the_manual_grades(course):
    (course.submission("erin")).mkdir(parents=True)
    (course.submission("erin") / "timestamp.txt").write_text("2026-12-06 10:00:00 UTC")
    record_submission(course, result(course, "erin", 0.5))
    with open_gradebook(course) as gradebook:
        submission = gradebook.find_submission(NOTEBOOK, "erin")
        assert submission.total_seconds_late == 122460 and submission.late_submission_penalty == 8  # 2 days: 20% of 40
    for grade_id in ("regression_answer", "comparison_answer", "reflection_answer"):
        grade_by_hand(course, "erin", grade_id, 5)
    total = student_totals(course)["erin"]
    assert (total.score, total.late_penalty, total.total, total.manual_pending) == (55, 11, 44, [])


def test_an_answer_left_as_released_gets_nbgraders_no_response_comment(course):
    release = nbformat.read(RELEASE, as_version=4)
    record_submission(course, result(course, "bob", 0.0, executed=release))
    with open_gradebook(course) as gradebook:
        assert gradebook.find_comment("regression_answer", NOTEBOOK, NOTEBOOK, "bob").auto_comment == "No response."
