"""`coursekit merge-gradebooks`: shards' SQLite gradebooks merged into the course's gradebook give what one
process recording the whole class gives; merging again changes nothing; manual grades given in the
course's gradebook survive a re-graded shard; two shards disagreeing about a student is an error that
names the student, before anything is written."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from coursekit.cli import main
from coursekit.config import Course
from coursekit.course.gradebook import (
    DB_URL_VARIABLE,
    ensure_assignment,
    open_gradebook,
    record_submission,
    student_totals,
)
from coursekit.course.merge import MergeError, merge_gradebooks
from prepared_results import Prepared, cell_records, export_rows, make_course, prepared_class, submit

CLASS = prepared_class(12)
STUDENTS = [prepared.student for prepared in CLASS]
NOTEBOOK = "classifier_from_scratch"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A course whose gradebook.db has the assignment (nbgrader's generate_assignment, run once)."""
    course = make_course(tmp_path_factory.mktemp("template") / "course")
    ensure_assignment(course)
    return course.root


@pytest.fixture
def course(template, tmp_path) -> Course:
    shutil.copytree(template, tmp_path / "course")
    return Course(tmp_path / "course")


@pytest.fixture
def grade_shard(template, tmp_path, monkeypatch):
    """Record prepared results into a shard's own gradebook, as `COURSEKIT_DB_URL=... autograde` does."""
    def grade(name: str, course: Course, prepared: list[Prepared], fresh: bool = False) -> Path:
        path = tmp_path / name / "gradebook.db"
        path.parent.mkdir()
        if not fresh:  # a fresh shard records the assignment itself, into its own file
            shutil.copy(template / "gradebook.db", path)
        with monkeypatch.context() as patch:
            patch.setenv(DB_URL_VARIABLE, f"sqlite:///{path}")
            for one in prepared:
                record_submission(course, submit(course, one))
        return path
    return grade


def grade_by_hand(course: Course, student: str, grade_id: str, points: float) -> None:
    """What formgrader's grade handler does."""
    with open_gradebook(course) as gradebook:
        grade = gradebook.find_grade(grade_id, NOTEBOOK, NOTEBOOK, student)
        grade.manual_score, grade.needs_manual_grade = points, False
        gradebook.db.commit()


def test_merged_shards_match_one_process(course, grade_shard, tmp_path):
    fresh = make_course(tmp_path / "fresh")  # no gradebook.db yet: the merge records the assignment first
    shards = [grade_shard(f"shard-{k}", course, CLASS[k - 1::3], fresh=k == 1) for k in (1, 2, 3)]
    summary = merge_gradebooks(fresh, shards)
    assert summary.added == STUDENTS and not summary.updated and not summary.unchanged
    for one in CLASS:
        record_submission(course, submit(course, one))
    assert export_rows(fresh) == export_rows(course) and cell_records(fresh) == cell_records(course)
    assert len(export_rows(fresh)) == len(STUDENTS)


def test_merging_again_changes_nothing(course, grade_shard):
    shards = [grade_shard("shard-1", course, CLASS[:8]), grade_shard("shard-2", course, CLASS[6:])]  # 2 in both
    merge_gradebooks(course, shards)
    before = (export_rows(course), cell_records(course))
    again = merge_gradebooks(course, shards + shards[:1])
    assert again.unchanged == STUDENTS and not again.added and not again.updated
    assert (export_rows(course), cell_records(course)) == before


def test_a_conflict_names_the_student_and_writes_nothing(course, grade_shard):
    late_alice = Prepared(STUDENTS[1], 0.5, "2026-12-06 10:00:00 UTC")
    shards = [grade_shard("shard-1", course, CLASS[:3]), grade_shard("shard-2", course, [late_alice])]
    with pytest.raises(MergeError) as error:
        merge_gradebooks(course, shards)
    message = str(error.value)
    assert message.startswith(f"{STUDENTS[1]}: {shards[0]} and {shards[1]} hold different records of this student")
    assert "timestamp None / 2026-12-06 10:00:00" in message
    assert export_rows(course) == []


def test_a_regraded_shard_keeps_the_manual_grades_and_flags_them_once(course, grade_shard):
    student = CLASS[3]  # late: the penalty is recomputed on the total with the manual grades
    merge_gradebooks(course, [grade_shard("first", course, [student])])
    grade_by_hand(course, student.student, "regression_answer", 5)
    grade_by_hand(course, student.student, "test_linear", 2)  # a person overrode an automatic score
    regraded = grade_shard("regraded", course, [Prepared(student.student, 1.0, student.timestamp)])
    assert merge_gradebooks(course, [regraded]).updated == [student.student]
    cells = cell_records(course)  # kept, and flagged for review as nbgrader flags them on re-grading
    assert cells[(student.student, "grade regression_answer")] == (None, 5, True)
    assert cells[(student.student, "grade test_linear")] == (8, 2, True)
    total = student_totals(course)[student.student]
    assert (total.score, total.late_penalty) == (80 - 8 + 2 + 5, round((80 - 8 + 2 + 5) * 0.2, 2))
    for grade_id, points in [("regression_answer", 5), ("test_linear", 2)]:
        grade_by_hand(course, student.student, grade_id, points)  # reviewed
    assert merge_gradebooks(course, [regraded]).unchanged == [student.student]  # the same grading: no new flag
    assert cell_records(course)[(student.student, "grade test_linear")] == (8, 2, False)


def test_a_shard_graded_against_another_assignment_is_refused(course, grade_shard, monkeypatch):
    shard = grade_shard("other", course, [])
    with Gradebook(f"sqlite:///{shard}", course_id="classifier_from_scratch_course") as gradebook:
        gradebook.add_grade_cell("extra_points", NOTEBOOK, NOTEBOOK, max_score=1, cell_type="code")
    monkeypatch.setenv(DB_URL_VARIABLE, f"sqlite:///{shard}")
    record_submission(course, submit(course, CLASS[0]))
    monkeypatch.delenv(DB_URL_VARIABLE)
    with pytest.raises(MergeError, match=f"{STUDENTS[0]}: the shard's grade cell 'extra_points'"):
        merge_gradebooks(course, [shard])
    assert export_rows(course) == []


def test_the_command_line_merges_and_says_what_it_did(course, grade_shard, tmp_path, capsys):
    shards = [grade_shard("shard-1", course, CLASS[:2]), grade_shard("shard-2", course, CLASS[2:3])]
    assert main(["--root", str(course.root), "merge-gradebooks", *map(str, shards)]) == 0
    assert "Merged 2 shard gradebook(s) into sqlite:///" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("not a database")
    for bad, reason in [
        (tmp_path / "missing.db", "no such file"),
        (tmp_path / "notes.txt", "not an nbgrader gradebook"),
    ]:
        assert main(["--root", str(course.root), "merge-gradebooks", str(bad)]) == 1
        assert f"error: {bad}: {reason}" in capsys.readouterr().err
