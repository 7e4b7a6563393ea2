"""Recording graded submissions in nbgrader's gradebook as nbgrader's autograde would."""
from __future__ import annotations

import shutil
import warnings

import nbformat
import pytest

from conftest import RELEASE, ROOT
from coursekit.config import Course
from coursekit.course.gradebook import (
    ensure_assignment,
    grant_extension,
    open_gradebook,
    record_submission,
    student_totals,
)
from coursekit.grading import score
from coursekit.grading.bubblewrap import Completed
from coursekit.grading.execute import Execution
from coursekit.grading.record import Submission
from coursekit.grading.rubric import load_rubric
from coursekit.in_sandbox.protocol import RunLog

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


def test_recording_raises_no_sqlalchemy_warning(course):
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", SAWarning)
        record_submission(course, result(course, "alice", 1.0))
        record_submission(course, result(course, "alice", 0.5))
        student_totals(course)
    with open_gradebook(course) as gradebook:
        notebook = gradebook.find_submission_notebook(NOTEBOOK, NOTEBOOK, "alice")
        assert len(notebook.grades) == len(load_rubric(course.source_notebook).cells)
        assert len(notebook.comments) == len(gradebook.find_notebook(NOTEBOOK, NOTEBOOK).solution_cells) > 0


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
    for grade_id, points in (("derivation_answer", 3), ("regression_answer", 4), ("comparison_answer", 4),
                             ("reflection_answer", 4)):
        grade_by_hand(course, "erin", grade_id, points)
    total = student_totals(course)["erin"]
    assert (total.score, total.late_penalty, total.total, total.manual_pending) == (55, 11, 44, [])


def test_an_answer_left_as_released_gets_nbgraders_no_response_comment(course):
    release = nbformat.read(RELEASE, as_version=4)
    record_submission(course, result(course, "bob", 0.0, executed=release))
    with open_gradebook(course) as gradebook:
        assert gradebook.find_comment("regression_answer", NOTEBOOK, NOTEBOOK, "bob").auto_comment == "No response."


def test_an_extension_given_in_nbgrader_removes_the_late_penalty(course):
    course.submission("erin").mkdir(parents=True)
    (course.submission("erin") / "timestamp.txt").write_text("2026-12-06 10:00:00 UTC")
    record_submission(course, result(course, "erin", 0.5))
    late = student_totals(course)["erin"]
    assert (late.days_late, late.late_penalty, late.extension_seconds) == (2, 8, 0)
    extended = grant_extension(course, "erin", days=2, hours=0)
    assert (extended.days_late, extended.late_penalty, extended.extension_seconds) == (0, 0, 2 * 86400)
    assert student_totals(course)["erin"].total == 40


def test_the_extension_command_rewrites_the_page_and_refuses_an_unknown_student(course, capsys):
    from coursekit.cli import main
    from coursekit.grading.report import write_submission_report

    course.submission("erin").mkdir(parents=True)
    (course.submission("erin") / "timestamp.txt").write_text("2026-12-06 10:00:00 UTC")
    graded = result(course, "erin", 0.5)
    write_submission_report(graded, course)
    record_submission(course, graded)
    assert main(["--root", str(course.root), "extension", "erin", "--days", "1", "--hours", "12"]) == 0
    assert "erin: an extension of 1 day(s) 12 hour(s); now 0 day(s) late, late penalty 0, total 40 / 100" \
        in capsys.readouterr().out
    page = (course.root / "feedback" / "erin" / NOTEBOOK / f"{NOTEBOOK}.html").read_text()
    assert "within your extension" in page and "<td>-8</td>" not in page
    assert main(["--root", str(course.root), "extension", "eri", "--days", "1"]) == 1
    assert "eri has no graded submission" in capsys.readouterr().err


def grades_csv(course: Course) -> dict[str, dict[str, str]]:
    import csv

    from coursekit.grading.report import export_class

    with open(export_class(course), newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def test_grades_csv_follows_the_gradebook_manual_grades_late_penalty_and_status(course):
    from coursekit.grading.report import write_submission_report

    course.submission("erin").mkdir(parents=True)
    (course.submission("erin") / "timestamp.txt").write_text("2026-12-06 10:00:00 UTC")
    for student, fraction in (("alice", 1.0), ("erin", 0.5)):
        graded = result(course, student, fraction)
        write_submission_report(graded, course)
        record_submission(course, graded)
    before = grades_csv(course)
    assert [(r["status"], r["late_penalty"], r["total"], r["regression_answer"]) for r in before.values()] == [
        ("manual_pending", "0", "80", ""), ("manual_pending", "8", "32", "")]
    for grade_id, points in (("derivation_answer", 5), ("regression_answer", 5), ("comparison_answer", 6),
                             ("reflection_answer", 4)):
        grade_by_hand(course, "alice", grade_id, points)
    grade_by_hand(course, "erin", "regression_answer", 5)
    after = grades_csv(course)
    alice, erin = after["alice"], after["erin"]
    assert (alice["regression_answer"], alice["manual_total"], alice["total"], alice["max_total"], alice["status"]) == \
        ("5", "20", "100", "100", "final")
    assert (erin["regression_answer"], erin["manual_pending_points"], erin["late_penalty"], erin["days_late"],
            erin["total"], erin["status"]) == ("5", "15", "9", "2", "36", "manual_pending")


def formgrader_api(course: Course):
    """nbgrader's API as formgrader builds it for this course folder, with its nbgrader_config.py."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course.root)).load_config()
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir, Authenticator(coursedir=coursedir, config=config), config=config)


def graded_by_coursekit(course: Course, student: str) -> None:
    """alice's submission (the release notebook), graded and recorded as coursekit does."""
    from coursekit.grading.report import write_submission_report

    course.submission(student).mkdir(parents=True, exist_ok=True)
    shutil.copy(RELEASE, course.submission(student) / course.notebook_name)
    graded = result(course, student, 0.5, executed=nbformat.read(RELEASE, as_version=4))
    write_submission_report(graded, course)
    record_submission(course, graded)


def test_formgraders_autograde_button_cannot_replace_what_the_sandbox_graded(course):
    graded_by_coursekit(course, "alice")
    results = (course.root / "autograded" / "alice" / NOTEBOOK / "results.json").read_text()
    outcome = formgrader_api(course).autograde(NOTEBOOK, "alice")
    assert not outcome["success"] and "python -m coursekit autograde alice" in outcome["log"]
    assert (course.root / "autograded" / "alice" / NOTEBOOK / "results.json").read_text() == results
    with open_gradebook(course) as gradebook:
        assert gradebook.find_grade("test_linear", NOTEBOOK, NOTEBOOK, "alice").auto_score == 4


def test_formgraders_feedback_button_writes_the_kits_offline_page(course):
    graded_by_coursekit(course, "alice")
    grade_by_hand(course, "alice", "regression_answer", 5, "Name the scalar target.")
    outcome = formgrader_api(course).generate_feedback(NOTEBOOK, "alice")
    assert outcome["success"], outcome.get("error")
    page = (course.root / "feedback" / "alice" / NOTEBOOK / f"{NOTEBOOK}.html").read_text()
    assert "Content-Security-Policy" in page and "feedback for alice" in page and "Name the scalar target." in page
    assert "mathjax" not in page.lower() and "<script" not in page.lower()


def test_a_submission_that_could_not_be_read_can_still_be_graded_by_hand_in_formgrader(course):
    from coursekit.grading.report import write_submission_report

    for student, fraction in (("alice", 1.0), ("frank", 0.0)):
        graded = result(course, student, fraction)
        if student == "frank":
            graded.failure = "Your notebook could not be read: the notebook is not valid JSON (line 9, column 1)"
        write_submission_report(graded, course)
        record_submission(course, graded)
    listed = {s["student"]: s for s in formgrader_api(course).get_notebook_submissions(NOTEBOOK, NOTEBOOK)}
    assert set(listed) == {"alice", "frank"} and listed["frank"]["needs_manual_grade"]
    stand_in = nbformat.read(course.root / "autograded" / "frank" / NOTEBOOK / f"{NOTEBOOK}.ipynb", as_version=4)
    assert "not valid JSON (line 9, column 1)" in stand_in.cells[0].source
    assert "submitted/frank/classifier_from_scratch/classifier_from_scratch.ipynb" in stand_in.cells[0].source
    answers = [c for c in stand_in.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "regression_answer"]
    assert len(answers) == 1
    from coursekit.grading.feedback import write_feedback

    page = write_feedback(course, "frank").read_text()  # as `coursekit feedback` rewrites it
    assert "The grader could not run your notebook." in page and "blank release notebook" not in page
