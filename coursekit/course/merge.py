"""Merge the gradebooks of shards graded without a shared server (SQLite files, one per shard) into the
course's gradebook, through nbgrader's API: `coursekit merge-gradebooks shard-*/gradebook.db`.

A shard's record of a student is what its grader wrote: the submission's timestamp, each cell's automatic
score and comment, and anything else the shard holds. Merging writes it as re-grading would: automatic
scores and comments replace the course's, manual grades, comments and extensions already given in the
course's gradebook are kept (and flagged for review, as nbgrader flags them, when the shard holds a new
grading of the student), and the late penalty is recomputed on the result. Merging the same shards
again changes nothing. Two shards holding different records of one student is an error that names the student,
found before anything is written."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from nbgrader.api import Gradebook, InvalidEntry, MissingEntry, SubmittedAssignment
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from coursekit.config import Course
from coursekit.course.gradebook import assign_late_penalty, ensure_assignment, nbgrader_settings, open_gradebook

NAME_FIELDS = ("first_name", "last_name", "email", "lms_user_id")


class MergeError(ValueError):
    """The shards cannot be merged; the message names the file, and the student where there is one."""


@dataclass(frozen=True)
class CellRecord:
    notebook: str
    kind: str                  # "grade" or "comment"
    cell: str
    auto: float | str | None   # auto_score, or auto_comment
    manual: float | str | None
    extra_credit: float | None = None
    needs_manual_grade: bool = field(default=False, compare=False)  # follows from the rest

    @property
    def key(self) -> tuple[str, str, str]:
        return self.notebook, self.kind, self.cell


@dataclass(frozen=True)
class StudentRecord:
    student: str
    timestamp: datetime | None
    extension: timedelta | None
    names: tuple[tuple[str, str], ...]         # the Student's NAME_FIELDS that are set
    late_penalties: tuple[tuple[str, float | None], ...]
    cells: tuple[CellRecord, ...]

    def graded(self) -> tuple:
        """What the grader wrote: a shard whose record differs in these holds a new grading of the student."""
        return self.timestamp, tuple((cell.key, cell.auto) for cell in self.cells)

    def differences(self, other: StudentRecord) -> list[str]:
        """What differs, one phrase per field or cell: `test_linear auto 8.0 / 4.0`."""
        found = [f"{f.name} {getattr(self, f.name)} / {getattr(other, f.name)}" for f in fields(self)
                 if f.name != "cells" and getattr(self, f.name) != getattr(other, f.name)]
        mine, theirs = {c.key: c for c in self.cells}, {c.key: c for c in other.cells}
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                found.append(f"{key[2]} {describe(mine.get(key))} / {describe(theirs.get(key))}")
        return found


def describe(cell: CellRecord | None) -> str:
    return "missing" if cell is None else f"auto {cell.auto!r}, manual {cell.manual!r}"


@dataclass
class MergeSummary:
    target: str                                   # the course's database, password hidden
    shards: list[Path]
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def record_of(submission: SubmittedAssignment) -> StudentRecord:
    student = submission.student
    cells = []
    for notebook in submission.notebooks:
        cells += [CellRecord(notebook.name, "grade", grade.name, grade.auto_score, grade.manual_score,
                             grade.extra_credit, grade.needs_manual_grade) for grade in notebook.grades]
        cells += [CellRecord(notebook.name, "comment", comment.name, comment.auto_comment, comment.manual_comment)
                  for comment in notebook.comments]
    return StudentRecord(
        student.id, submission.timestamp, submission.extension,
        tuple((name, getattr(student, name)) for name in NAME_FIELDS if getattr(student, name)),
        tuple(sorted((notebook.name, notebook.late_submission_penalty) for notebook in submission.notebooks)),
        tuple(sorted(cells, key=lambda cell: cell.key)))


def read_shard(path: Path, course_id: str, assignment: str) -> list[StudentRecord]:
    """Every submission of the assignment in a shard's SQLite gradebook, opened read-only."""
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    url = f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"
    try:
        with Gradebook(url, course_id=course_id) as gradebook:
            try:
                submissions = gradebook.find_assignment(assignment).submissions
            except MissingEntry:
                return []
            return [record_of(submission) for submission in submissions]
    except (SQLAlchemyError, InvalidEntry) as error:
        reason = str(error).splitlines()[0][:200]
        raise MergeError(f"{path}: not an nbgrader gradebook of course {course_id!r} ({reason})") from None


def read_shards(paths: list[Path], course_id: str, assignment: str) -> dict[str, StudentRecord]:
    """One record per student from all shards; MergeError if two shards disagree about a student."""
    found: dict[str, tuple[StudentRecord, Path]] = {}
    for path in paths:
        for record in read_shard(path, course_id, assignment):
            if record.student in found and found[record.student][0] != record:
                first, where = found[record.student]
                raise MergeError(f"{record.student}: {where} and {path} hold different records of this student "
                                 f"({'; '.join(first.differences(record)[:3])}); merge the right one alone")
            found.setdefault(record.student, (record, path))
    return {student: record for student, (record, _) in sorted(found.items())}


def merge_gradebooks(course: Course, paths: list[Path]) -> MergeSummary:
    """Merge the shards' records into the course's gradebook (COURSEKIT_DB_URL if set, else
    nbgrader_config.py's db_url)."""
    db_url, course_id = nbgrader_settings(course)
    records = read_shards(paths, course_id, course.assignment)
    summary = MergeSummary(shown_url(db_url), paths)
    ensure_assignment(course)
    policy = course.settings.late
    with open_gradebook(course) as gradebook:
        check_cells(gradebook, course.assignment, records)
        gradebook.update_or_create_assignment(course.assignment, duedate=policy.due)  # as recording does
        for student, record in records.items():
            before = existing_record(gradebook, course.assignment, student)
            write_record(gradebook, course.assignment, record)
            assign_late_penalty(gradebook, course, student, policy)
            after = existing_record(gradebook, course.assignment, student)
            outcome = summary.added if before is None else summary.unchanged if before == after else summary.updated
            outcome.append(student)
    return summary


def shown_url(db_url: str) -> str:
    return make_url(db_url).render_as_string(hide_password=True)


def check_cells(gradebook: Gradebook, assignment: str, records: dict[str, StudentRecord]) -> None:
    """Before anything is written: every cell of every record is one of the course's assignment."""
    known: dict[str, set[tuple[str, str]]] = {}
    for record in records.values():
        for cell in record.cells:
            if cell.notebook not in known:
                known[cell.notebook] = course_cells(gradebook, assignment, cell.notebook)
            if (cell.kind, cell.cell) not in known[cell.notebook]:
                raise MergeError(f"{record.student}: the shard's {cell.kind} cell {cell.cell!r} of {cell.notebook} is "
                                 "not in the course's assignment (graded against another version of it?)")


def course_cells(gradebook: Gradebook, assignment: str, notebook: str) -> set[tuple[str, str]]:
    try:
        found = gradebook.find_notebook(notebook, assignment)
    except MissingEntry:
        return set()
    return ({("grade", cell.name) for cell in found.grade_cells + found.task_cells}
            | {("comment", cell.name) for cell in found.solution_cells + found.task_cells})


def existing_record(gradebook: Gradebook, assignment: str, student: str) -> StudentRecord | None:
    try:
        return record_of(gradebook.find_submission(assignment, student))
    except MissingEntry:
        return None


def write_record(gradebook: Gradebook, assignment: str, record: StudentRecord) -> None:
    """The shard's record over the course's, as a re-grade: what a person gave in the course's gradebook stays."""
    known = existing_record(gradebook, assignment, record.student)
    student = gradebook.update_or_create_student(record.student)
    for name, value in record.names:
        if not getattr(student, name):
            setattr(student, name, value)
    submission = gradebook.update_or_create_submission(assignment, record.student, timestamp=record.timestamp)
    submission.extension = submission.extension or record.extension
    regraded = known is not None and known.graded() != record.graded()
    for cell in record.cells:
        write_cell(gradebook, assignment, record.student, cell, known is None, regraded)
    gradebook.db.commit()


def write_cell(
    gradebook: Gradebook, assignment: str, student: str, cell: CellRecord, new: bool, regraded: bool
) -> None:
    if cell.kind == "comment":
        comment = gradebook.find_comment(cell.cell, cell.notebook, assignment, student)
        comment.auto_comment = cell.auto
        comment.manual_comment = comment.manual_comment if comment.manual_comment is not None else cell.manual
        return
    grade = gradebook.find_grade(cell.cell, cell.notebook, assignment, student)
    grade.auto_score = cell.auto
    grade.manual_score = grade.manual_score if grade.manual_score is not None else cell.manual
    grade.extra_credit = grade.extra_credit if grade.extra_credit is not None else cell.extra_credit
    if new:
        grade.needs_manual_grade = cell.needs_manual_grade
    elif regraded:  # nbgrader's rule on re-grading: a manual grade is kept and flagged for review
        grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
