"""One PostgreSQL gradebook for a sharded class (nbgrader's `db_url` in nbgrader_config.py): shards
recording at the same time, on a real server started for these tests, lose no update and create no
duplicate student, and re-grading from another shard keeps the manual grades. Skipped, with the
reason, where no server can start."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from coursekit.config import Course
from coursekit.course.gradebook import (
    ensure_assignment,
    nbgrader_settings,
    open_gradebook,
    record_submission,
    student_totals,
)
from coursekit.grading.rubric import load_rubric
from postgres_server import Unavailable, start_cluster
from prepared_results import cell_records, export_rows, make_course, prepared_class, submit

HERE = Path(__file__).resolve().parent
CLASS_SIZE = 12
NOTEBOOK = "classifier_from_scratch"
PREPARED = {prepared.student: prepared for prepared in prepared_class(CLASS_SIZE)}
STUDENTS = list(PREPARED)


@pytest.fixture(scope="module")
def cluster():
    try:
        with start_cluster() as running:
            yield running
    except Unavailable as reason:
        pytest.skip(f"no PostgreSQL server: {reason}")


@pytest.fixture(scope="module")
def template(cluster, tmp_path_factory) -> str:
    """A database with the assignment recorded (nbgrader's generate_assignment, run once): the name to copy."""
    course = make_course(tmp_path_factory.mktemp("template") / "course", cluster.create_database())
    ensure_assignment(course)
    return make_url(nbgrader_settings(course)[0]).database


@pytest.fixture
def new_course(cluster, template, tmp_path):
    """Courses whose gradebook is a database of their own on the server: a copy of the template, or
    `fresh`, an empty database (no tables yet)."""
    return lambda name, fresh=False: make_course(tmp_path / name, cluster.create_database(None if fresh else template))


def start_shards(course: Course, shards: list[list[str]]) -> list[subprocess.Popen]:
    """Each shard a process of its own, started and ready (the grader imported, its results prepared)."""
    processes = [subprocess.Popen([sys.executable, str(HERE / "record_shard.py"), str(course.root), str(CLASS_SIZE),
                                   *students], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True) for students in shards]
    for process in processes:
        assert process.stdout and process.stdout.readline() == "ready\n"
    return processes


def go(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        assert process.stdin
        process.stdin.write("go\n")
        process.stdin.close()


def record_at_once(course: Course, shards: list[list[str]]) -> list[tuple[int, str]]:
    """All shards recording from the same moment: (exit code, the students each could not record)."""
    processes = start_shards(course, shards)
    go(processes)
    return [(process.wait(timeout=600), process.stdout.read() if process.stdout else "") for process in processes]


def record_in_this_process(course: Course, students: list[str]) -> None:
    for student in students:
        record_submission(course, submit(course, PREPARED[student]))


def grade_by_hand(course: Course, student: str, grade_id: str, points: float) -> None:
    """What formgrader's grade handler does."""
    with open_gradebook(course) as gradebook:
        grade = gradebook.find_grade(grade_id, NOTEBOOK, NOTEBOOK, student)
        grade.manual_score, grade.needs_manual_grade = points, False
        gradebook.db.commit()


def test_the_course_records_into_the_server_named_by_nbgrader_config(new_course):
    course = new_course("course")
    assert nbgrader_settings(course)[0].startswith("postgresql+psycopg://")
    record_in_this_process(course, STUDENTS[:1])
    assert (
        not (course.root / "gradebook.db").exists()
        and [row["student_id"] for row in export_rows(course)] == STUDENTS[:1]
    )


def test_shards_opening_a_fresh_database_at_once_create_it_once(new_course):
    course = new_course("fresh", fresh=True)  # no tables: each shard's nbgrader would create them
    assert record_at_once(course, [[], [], []]) == [(0, "")] * 3
    with open_gradebook(course) as gradebook:
        assert [a.name for a in gradebook.assignments] == [NOTEBOOK]
        assert len(gradebook.find_notebook(NOTEBOOK, NOTEBOOK).grade_cells) == len(
            load_rubric(course.source_notebook).cells
        )


def test_three_shards_at_once_match_one_process(new_course):
    sharded, reference = new_course("sharded"), new_course("one_process")
    # Each shard records its interleaved slice, after the same four students as the others, at the same
    # moment (a re-grade racing the first grading). Without the lock, shards fail on duplicate keys.
    shards = [STUDENTS[:4] + STUDENTS[4 + k::3] for k in range(3)]
    assert record_at_once(sharded, shards) == [(0, "")] * 3
    record_in_this_process(reference, STUDENTS)
    rows = export_rows(sharded)
    assert [row["student_id"] for row in rows] == STUDENTS  # each student once: none lost, no duplicate
    assert rows == export_rows(reference) and cell_records(sharded) == cell_records(reference)


def test_regrading_from_another_shard_keeps_the_manual_grades(new_course):
    course = new_course("course")
    student = STUDENTS[3]  # late: the penalty follows the manual grade too
    record_in_this_process(course, [student])
    grade_by_hand(course, student, "regression_answer", 5)
    assert record_at_once(course, [[student], [STUDENTS[4]]]) == [(0, "")] * 2
    grade = cell_records(course)[(student, "grade regression_answer")]
    assert grade == (None, 5, True)  # kept, and flagged for review as nbgrader flags a re-graded cell
    total = student_totals(course)[student]
    assert (total.score, total.late_penalty) == (PREPARED[student].fraction * 80 + 5,
                                                 round((PREPARED[student].fraction * 80 + 5) * 0.2, 2))


def test_a_process_holding_the_gradebook_makes_the_others_wait(new_course):
    course = new_course("course")
    (waiting,) = start_shards(course, [STUDENTS[:1]])
    with open_gradebook(course):
        go([waiting])
        time.sleep(5)
        assert waiting.poll() is None  # still waiting for the lock this process holds
    assert waiting.wait(timeout=120) == 0
    assert [row["student_id"] for row in export_rows(course)] == STUDENTS[:1]
