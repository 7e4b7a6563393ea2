"""A class of prepared grading results, recorded in a gradebook without grading anything: the gradebook
tests of shards (PostgreSQL, merged SQLite files) and the scale benchmark record these, in one process
or in several at once, and compare what the gradebooks hold."""
from __future__ import annotations

import csv
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.plugins.export import CsvExportPlugin

from coursekit.config import Course
from coursekit.course.gradebook import open_gradebook
from coursekit.grading import score
from coursekit.grading.bubblewrap import Completed
from coursekit.grading.execute import Execution
from coursekit.grading.record import Submission
from coursekit.grading.rubric import load_rubric
from coursekit.in_sandbox.protocol import RunLog

ROOT = Path(__file__).resolve().parent.parent
LATE = '[late]\ndue = "2026-12-04 23:59:00 UTC"\npolicy = "percent_per_day"\npercent_per_day = 10\n'


@dataclass(frozen=True)
class Prepared:
    student: str
    fraction: float               # of every autograded cell's points
    timestamp: str | None = None  # nbgrader's timestamp.txt
    blank: bool = False           # the release notebook as executed: "No response." comments


def prepared_class(size: int) -> list[Prepared]:
    """Students with different scores, every fourth one late, every fifth one's answers left blank."""
    return [Prepared(f"student{i:03d}", round((i % 7) / 6, 2), "2026-12-06 10:00:00 UTC" if i % 4 == 3 else None,
                     blank=i % 5 == 4) for i in range(size)]


def make_course(folder: Path, db_url: str | None = None) -> Course:
    """A course folder with the source, the release, nbgrader's configuration (with this `db_url`, if
    given) and a late policy."""
    for name in ("source", "release"):
        shutil.copytree(ROOT / name, folder / name)
    config = (ROOT / "nbgrader_config.py").read_text()
    (folder / "nbgrader_config.py").write_text(config + (f"c.CourseDirectory.db_url = {db_url!r}\n" if db_url else ""))
    (folder / "course.toml").write_text(LATE)
    return Course(folder)


def submit(course: Course, prepared: Prepared) -> Submission:
    """The student's submission folder, and a grading result as the grader would hand it over."""
    folder = course.submission(prepared.student)
    folder.mkdir(parents=True, exist_ok=True)
    if prepared.timestamp:
        (folder / "timestamp.txt").write_text(prepared.timestamp)
    parts = [score.PartResult(c.grade_id, c.part, 0.0, c.points, pending=True) if not c.autograded
             else score.PartResult(c.grade_id, c.part, round(c.points * prepared.fraction, 2), c.points)
             for c in load_rubric(course.source_notebook).cells]
    result = Submission(prepared.student, folder / course.notebook_name, parts=parts)
    if prepared.blank:
        executed = nbformat.read(course.release_notebook, as_version=4)
        result.execution = Execution(Completed(0, 0.0, False, None, False, ""), RunLog(), executed, {}, {})
    return result


def export_rows(course: Course) -> list[dict[str, str]]:
    """`nbgrader export` (its CSV plugin) of the course's gradebook, one row per student and assignment."""
    with tempfile.TemporaryDirectory() as scratch, open_gradebook(course) as gradebook:
        path = Path(scratch) / "grades.csv"
        CsvExportPlugin(to=str(path)).export(gradebook)
        return sorted(csv.DictReader(path.open()), key=lambda row: (row["assignment"], row["student_id"]))


def cell_records(course: Course) -> dict[tuple[str, str], tuple]:
    """Every grade and comment of every submission: (student, cell) -> what the gradebook holds."""
    found: dict[tuple[str, str], tuple] = {}
    with open_gradebook(course) as gradebook:
        for submission in gradebook.find_assignment(course.assignment).submissions:
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    found[(submission.student.id, f"grade {grade.name}")] = (
                        grade.auto_score, grade.manual_score, grade.needs_manual_grade)
                for comment in notebook.comments:
                    found[(submission.student.id, f"comment {comment.name}")] = (
                        comment.auto_comment, comment.manual_comment)
                found[(submission.student.id, "late")] = (notebook.late_submission_penalty,)
    return found
