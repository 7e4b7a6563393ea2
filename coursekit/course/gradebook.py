"""nbgrader's gradebook (`gradebook.db`), written the way nbgrader's own autograde writes it, through
`nbgrader.api.Gradebook`: student, submission with its timestamp, each grade cell's `auto_score`,
manually graded cells flagged as needing a grade, "No response." comments, the late penalty."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.utils import compute_checksum, is_solution, is_task
from traitlets.config.loader import PyFileConfigLoader

from coursekit.config import Course, LatePolicy
from coursekit.course.gradebook_lock import exclusive
from coursekit.course.late import read_timestamp
from coursekit.grading.feedback import write_feedback
from coursekit.grading.record import Submission
from coursekit.grading.rubric import load_rubric

logger = logging.getLogger(__name__)
# A shard's own gradebook, in place of nbgrader_config.py's db_url (e.g. sqlite:///shards/shard-3/gradebook.db).
DB_URL_VARIABLE = "COURSEKIT_DB_URL"


def nbgrader_settings(course: Course) -> tuple[str, str]:
    """(database URL, course id) as nbgrader reads them from the course's nbgrader_config.py."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course.root)).load_config() \
        if (course.root / "nbgrader_config.py").is_file() else {}
    directory = config.get("CourseDirectory", {})
    db_url = os.environ.get(DB_URL_VARIABLE) or directory.get("db_url") or f"sqlite:///{course.gradebook_file}"
    return db_url, directory.get("course_id") or "default_course"


def scripts_on_path() -> Path:
    """nbgrader runs `alembic` from its own environment when it creates a gradebook."""
    scripts = Path(sys.executable).parent
    if str(scripts) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    return scripts


@contextmanager
def open_gradebook(course: Course) -> Iterator[Gradebook]:
    """The course's gradebook, held exclusively while open (gradebook_lock: shards sharing a server)."""
    db_url, course_id = nbgrader_settings(course)
    scripts_on_path()
    with exclusive(db_url, course_id), Gradebook(db_url, course_id=course_id) as gradebook:
        yield gradebook


def ensure_assignment(course: Course) -> None:
    """The assignment with its notebook and grade cells, as `nbgrader generate_assignment` records them
    (run here into a scratch release folder if the gradebook lacks them)."""
    with open_gradebook(course) as gradebook:
        try:
            gradebook.find_notebook(course.notebook_id, course.assignment)
            return
        except MissingEntry:
            pass
        record_assignment_from_source(course)  # still held: one shard records it, the others then find it


def record_assignment_from_source(course: Course) -> None:
    scripts = scripts_on_path()
    override = os.environ.get(DB_URL_VARIABLE)  # nbgrader reads nbgrader_config.py, not our variable
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([str(scripts / "nbgrader"), "generate_assignment", course.assignment, "--force",
                        f"--CourseDirectory.root={course.root}", f"--CourseDirectory.release_directory={scratch}",
                        *([f"--CourseDirectory.db_url={override}"] if override else []),
                        "--log-level=WARN"], cwd=course.root, check=True)


def record_names(course: Course, people: dict[str, dict[str, str]]) -> None:
    """Students' names (first_name, last_name, email), as formgrader shows them."""
    with open_gradebook(course) as gradebook:
        for student, names in people.items():
            gradebook.update_or_create_student(student, **names)


def remove_students(course: Course, students: list[str]) -> None:
    """These students and their submissions, from the gradebook (where there is one)."""
    if not has_gradebook(course):
        return
    with open_gradebook(course) as gradebook:
        for student in students:
            try:
                gradebook.remove_student(student)
            except MissingEntry:
                continue


def record_due_date(course: Course) -> None:
    """The assignment's due date from course.toml, as formgrader shows it and late penalties use it."""
    with open_gradebook(course) as gradebook:
        gradebook.update_or_create_assignment(
            course.assignment, duedate=course.settings.late.due
        )


def record_graded(course: Course, result: Submission) -> None:
    """Record a graded submission, then rewrite its feedback page with what the gradebook holds (manual
    grades from an earlier round, the late penalty). A gradebook problem is reported, grading goes on."""
    try:
        total = record_submission(course, result)
    except Exception as error:
        logger.warning("gradebook: %s was not recorded: %s", result.student, error)
        return
    write_feedback(course, result.student, total)


def manual_grade_ids(course: Course) -> set[str]:
    return {cell.grade_id for cell in load_rubric(course.source_notebook).manual}


def record_submission(course: Course, result: Submission) -> StudentTotal:
    """Record one graded submission; re-grading updates it (manual grades and comments are kept).
    Returns the student's total as the gradebook now has it."""
    policy = course.settings.late
    ensure_assignment(course)
    with open_gradebook(course) as gradebook:
        gradebook.update_or_create_assignment(course.assignment, duedate=policy.due)
        gradebook.update_or_create_student(result.student)
        update_or_create_submission(gradebook, course, result.student)
        save_auto_grades(gradebook, course, result)
        if result.executed is not None:
            save_auto_comments(gradebook, course, result.student, result.executed)
        assign_late_penalty(gradebook, course, result.student, policy)
        return student_total(gradebook, course, result.student, manual_grade_ids(course))


def update_or_create_submission(gradebook: Gradebook, course: Course, student: str) -> None:
    """nbgrader's, with autoflush held until it adds the new submission to the session: it builds the
    submission's notebooks, grades and comments first and reads the assignment's notebooks and cells
    meanwhile, which autoflushes objects not yet in the session (SQLAlchemy 2 no longer adds them through
    the backrefs) and warns "not in session". Its own `db.add` then adds them all."""
    with gradebook.db.no_autoflush:
        gradebook.update_or_create_submission(course.assignment, student,
                                              timestamp=read_timestamp(course.submission(student)))


def save_auto_grades(gradebook: Gradebook, course: Course, result: Submission) -> None:
    """nbgrader's SaveAutoGrades with our trusted scores: a manual score already given is kept, and
    flagged for review as nbgrader flags it; a cell with no automatic score needs a manual grade."""
    for part in result.parts:
        grade = gradebook.find_grade(part.grade_id, course.notebook_id, course.assignment, result.student)
        grade.auto_score = None if part.pending else part.score
        grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
    gradebook.db.commit()


def save_auto_comments(gradebook: Gradebook, course: Course, student: str, executed) -> None:
    """nbgrader's "No response." for a solution cell the student left as released."""
    for cell in executed.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not (is_solution(cell) or is_task(cell)) or "grade_id" not in meta:
            continue
        try:
            comment = gradebook.find_comment(meta["grade_id"], course.notebook_id, course.assignment, student)
        except MissingEntry:  # a cell the student added cannot forge a gradebook entry
            continue
        unchanged = meta.get("checksum") == compute_checksum(cell) and not is_task(cell)
        comment.auto_comment = "No response." if unchanged else None
    gradebook.db.commit()


def assign_late_penalty(gradebook: Gradebook, course: Course, student: str, policy: LatePolicy) -> None:
    """nbgrader's AssignLatePenalties with the course's policy, on the current score (manual grades
    included), so it is recomputed whenever grades change."""
    submission = gradebook.find_submission(course.assignment, student)
    notebook = gradebook.find_submission_notebook(course.notebook_id, course.assignment, student)
    penalty = policy.penalty(notebook.score, submission.total_seconds_late)
    notebook.late_submission_penalty = penalty or None
    gradebook.db.commit()


@dataclass
class ManualGrade:
    grade_id: str
    max_score: float
    score: float | None          # None: not graded yet
    comment: str = ""


@dataclass
class StudentTotal:
    student: str
    score: float                 # nbgrader's: a manual score overrides the automatic one
    max_score: float
    late_penalty: float
    manual: list[ManualGrade] = field(default_factory=list)
    days_late: int = 0             # days started after the due date and the extension, past the grace period
    extension_seconds: float = 0.0

    @property
    def total(self) -> float:
        return round(max(0.0, self.score - self.late_penalty), 2)

    @property
    def manual_pending(self) -> list[str]:
        return [grade.grade_id for grade in self.manual if grade.score is None]


def student_totals(course: Course) -> dict[str, StudentTotal]:
    """Every submission's total from the gradebook (late penalties recomputed on the current scores)."""
    policy = course.settings.late
    manual_ids = manual_grade_ids(course)
    totals = {}
    with open_gradebook(course) as gradebook:
        try:
            submissions = gradebook.find_assignment(course.assignment).submissions
        except MissingEntry:
            return {}
        for submission in submissions:
            student = submission.student.id
            assign_late_penalty(gradebook, course, student, policy)
            totals[student] = student_total(gradebook, course, student, manual_ids)
    return dict(sorted(totals.items()))


def student_total(gradebook: Gradebook, course: Course, student: str, manual_ids: set[str]) -> StudentTotal:
    submission = gradebook.find_submission(course.assignment, student)
    notebook = gradebook.find_submission_notebook(course.notebook_id, course.assignment, student)
    comments = {comment.name: comment.comment or "" for comment in notebook.comments}
    manual = [ManualGrade(grade.name, grade.max_score, grade.manual_score, comments.get(grade.name, ""))
              for grade in notebook.grades if grade.name in manual_ids]
    days_late = course.settings.late.days_late(submission.total_seconds_late)
    extension = submission.extension.total_seconds() if submission.extension else 0.0
    return StudentTotal(student, submission.score, submission.max_score, submission.late_submission_penalty or 0.0,
                        sorted(manual, key=lambda g: g.grade_id), days_late, extension)


def recorded_total(course: Course, student: str) -> StudentTotal | None:
    """One student's total as student_totals gives it, or None if not recorded."""
    if not has_gradebook(course):
        return None
    with open_gradebook(course) as gradebook:
        try:
            assign_late_penalty(gradebook, course, student, course.settings.late)
        except MissingEntry:
            return None
        return student_total(gradebook, course, student, manual_grade_ids(course))


def has_gradebook(course: Course) -> bool:
    """Whether the course's gradebook exists (opening a SQLite one that does not would create it)."""
    db_url, _ = nbgrader_settings(course)
    return not db_url.startswith("sqlite:///") or Path(db_url.removeprefix("sqlite:///")).is_file()


def recorded_totals(course: Course) -> dict[str, StudentTotal]:
    """student_totals, or none where the course has no gradebook (grades merged from CI shards)."""
    return student_totals(course) if has_gradebook(course) else {}


def grant_extension(course: Course, student: str, days: float, hours: float) -> StudentTotal:
    """nbgrader's extension for a recorded submission (none when both are 0), the late penalty recomputed."""
    with open_gradebook(course) as gradebook:
        gradebook.grant_extension(course.assignment, student, days=days, hours=hours)
        assign_late_penalty(gradebook, course, student, course.settings.late)
        return student_total(gradebook, course, student, manual_grade_ids(course))
