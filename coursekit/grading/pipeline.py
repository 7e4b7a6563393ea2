"""The grading pipeline. One `Submission` record (record.py) per submission goes through the steps listed
in GRADING_STEPS; each step reads what the steps before it left on the record and adds its own part:

    fingerprint -> sanitize -> scan -> execute (sandboxed, probes included) -> apply_policy
    -> score -> list_review -> verify_untouched -> write_report

A step never raises for a bad submission: it records a note, or a `failure` that zeroes what could
not be graded, and the later steps go on with what there is. `Grader.grade` runs the steps;
`NotebookRunner` is what any run of a notebook needs: the course's `Environment` and a `WorkerPool`
(environment.py); the student's local check uses it with CHECK_STEPS.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from coursekit.config import Course
from coursekit.data import load_subset
from coursekit.grading.bubblewrap import Sandbox, python_read_only_paths
from coursekit.grading.checks import CHECKS, Context
from coursekit.grading.environment import Environment, WorkerPool
from coursekit.grading.execute import Execution, execute, new_worker, walk_files
from coursekit.grading.policy import Violation, find_violations, redefinitions
from coursekit.grading.record import ReviewItem, Submission
from coursekit.grading.report import write_submission_report
from coursekit.grading.retrain import RowIndex
from coursekit.grading.rubric import load_rubric
from coursekit.grading.sanitize import RefusedLink, UnreadableSubmission, read_submission, sanitize
from coursekit.grading.scan import Finding, scan_cells
from coursekit.grading.score import score
from coursekit.in_sandbox.protocol import PROBE_NAMES, ImportedData

RunnerT = TypeVar("RunnerT", bound="NotebookRunner")
# A step takes the runner it needs and the record: most take any NotebookRunner (the local check runs them
# too); score_step and write_report need the Grader (its rubric, test data, course). Step[Grader] accepts both.
Step = Callable[[RunnerT, Submission], None]


def tree_digest(folder: Path) -> str:
    """A checksum of a submission folder (names, link targets and contents), to prove it is untouched."""
    digest = hashlib.sha256()
    for path in walk_files(folder):
        digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape"))
        if path.is_symlink():
            digest.update(os.readlink(path).encode("utf-8", "surrogateescape"))
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(runner: NotebookRunner, submission: Submission) -> None:
    submission.digest = tree_digest(submission.folder)


def sanitize_step(runner: NotebookRunner, submission: Submission) -> None:
    """Read the notebook (never through a link, when grading) and rebuild it on the release."""
    try:
        notebook = read_submission(submission.notebook, runner.link_guard(submission))
        submission.clean = sanitize(notebook, runner.environment.release)
    except UnreadableSubmission as error:
        submission.failure = f"Your notebook could not be read: {error}"
        submission.failure_rule = "link" if isinstance(error, RefusedLink) else None
        submission.notes.append(submission.failure)
        return
    submission.notes += submission.clean.notes


def scan(runner: NotebookRunner, submission: Submission) -> None:
    if submission.clean:
        cells = [(c.index, c.source) for c in submission.clean.editable]
        submission.findings = scan_cells(cells, runner.environment.policy, runner.environment.preamble)


def execute_step(runner: NotebookRunner, submission: Submission) -> None:
    """Run the notebook and its probes in the next idle sandboxed worker."""
    if not submission.clean:
        return
    environment = runner.environment
    with runner.workers.take() as worker:
        submission.execution = execute(submission.clean.notebook, submission.folder, environment.course.notebook_name,
                                       worker, seed=secrets.randbits(31), probes=runner.probes,
                                       no_autograd=environment.policy.no_autograd, preamble=environment.snapshot_cells)
    submission.notes += submission.execution.notes + run_problems(submission.execution)


def run_problems(execution: Execution) -> list[str]:
    """What went wrong while running, in words for the student."""
    problems = [f"cell {cell}: {what}" if cell is not None else what for cell, what in execution.log.problems()]
    completed = execution.completed
    if completed.out_of_memory:
        problems.append("the notebook ran out of memory (the sandbox's limit) and was stopped")
    if completed.timed_out:
        problems.append("the run exceeded the grader's hard time limit and was stopped")
    elif completed.returncode != 0 and not completed.report:
        problems.append(
            f"the notebook's process was stopped (exit status {completed.returncode}) before it reported anything"
        )
    return problems


def apply_policy(runner: NotebookRunner, submission: Submission) -> None:
    """Violations, each with the parts it costs (policy.py): the scan's, autograd found in use after a
    cell, the run-time guard's records. Those outside graded code, and redefined graded names, go to review."""
    if not submission.clean:
        return
    editable, log = submission.clean.editable, submission.execution.log if submission.execution else None
    found = find_violations(submission.findings, log, editable, runner.environment.policy.no_autograd)
    submission.violations = [v for v in found if v.touches]
    submission.uncosted = [v for v in found if not v.touches] + redefinitions(editable)


def score_step(grader: Grader, submission: Submission) -> None:
    execution, course = submission.execution, grader.environment.course
    ctx = Context(execution.outputs, execution.inputs, grader.x_test, grader.y_test, grader.x_train, grader.y_train,
                  course.settings.floors, grader.rows) if execution and not submission.failure else None
    submission.parts = score(grader.rubric, ctx, submission.violations, failure=submission.failure)


def list_review(runner: NotebookRunner, submission: Submission) -> None:
    """Violations, what goes to a person (scan flags, uncosted calls, unconfirmed training evidence),
    data the student's code deserialised, and a refused submission."""
    if submission.failure_rule:
        submission.review.append(
            ReviewItem("review", submission.failure_rule, None, None, "", submission.failure or "")
        )
    if submission.clean:
        imported = submission.execution.log.imported_data if submission.execution else []
        submission.review += review_items(
            submission.violations, submission.findings, submission.clean.editable, imported, submission.uncosted
        )
    submission.review += [ReviewItem("review", "training-evidence", None, None, "", line.sentence, part.grade_id)
                          for part in submission.parts if part.score > 0 for line in part.lines if line.review]


def review_items(violations: list[Violation], findings: list[Finding], editable: list,
                 imported: Sequence[ImportedData] = (), uncosted: Sequence[Violation] = ()) -> list[ReviewItem]:
    sources = {c.index: c.source.splitlines() for c in editable}

    def code(cell, line):
        lines = sources.get(cell, [])
        return lines[line - 1].strip()[:200] if isinstance(line, int) and 0 < line <= len(lines) else ""

    items = [ReviewItem("violation", v.rule, v.cell, v.line, code(v.cell, v.line), v.message) for v in violations]
    items += [
        ReviewItem(
            "review",
            v.rule,
            v.cell,
            v.line,
            code(v.cell, v.line),
            v.message
            if v.rule == "redefinition"
            else f"{v.message} (outside the code that is graded: it costs no points, and a person will look)",
        )
        for v in uncosted
    ]
    items += [ReviewItem("review", f.rule, f.cell, f.line, code(f.cell, f.line), f.message)
              for f in findings if f.severity != "violation"]
    for load in imported:
        if load.dynamic or load.cell in sources:
            line = None if load.dynamic else load.line
            items.append(ReviewItem("review", "imported-data", load.cell, line, code(load.cell, line),
                                    f"`{load.api[:80]}` loaded data while your code ran: "
                                    "a person checks where it came from"))
    return items


def verify_untouched(runner: NotebookRunner, submission: Submission) -> None:
    if tree_digest(submission.folder) != submission.digest:
        submission.notes.append("GRADER ERROR: the submission folder changed during grading")


def write_report(grader: Grader, submission: Submission) -> None:
    write_submission_report(submission, grader.environment.course)


GRADING_STEPS: tuple[Step[Grader], ...] = (fingerprint, sanitize_step, scan, execute_step, apply_policy, score_step,
                                           list_review, verify_untouched, write_report)
CHECK_STEPS: tuple[Step[NotebookRunner], ...] = (sanitize_step, scan, execute_step, apply_policy)


def run_steps(runner: RunnerT, submission: Submission, steps: tuple[Step[RunnerT], ...]) -> Submission:
    start = time.monotonic()
    for step in steps:
        began = time.monotonic()
        submission.seconds = began - start  # current for the report step, which writes it
        step(runner, submission)
        submission.step_seconds[step.__name__] = time.monotonic() - began
    submission.seconds = time.monotonic() - start
    return submission


class NotebookRunner:
    """What running any notebook needs: the course's environment and `workers` warm sandboxed workers
    (started at once, in the background). Use it as a context manager: its workers and their folders are
    gone when the block ends, however it ends."""

    probes: tuple[str, ...] = ()  # the local check runs only the notebook's own (visible) tests

    def __init__(self, course: Course, require_sandbox: bool = False, threads: int = 1, mpl_cache: Path | None = None,
                 workers: int = 1):
        self.environment = Environment.of(course)
        self.sandbox = Sandbox([*python_read_only_paths(), self.environment.mnist], require=require_sandbox)
        self.workers = WorkerPool([new_worker(self.sandbox, self.environment.limits, self.environment.mnist, threads,
                                              mpl_cache) for _ in range(workers)])

    def link_guard(self, submission: Submission) -> Path | None:
        """The folder below which no link is followed (none for a notebook a student checks locally)."""
        return None

    def check_locally(self, notebook: Path) -> Submission:
        """The local check: CHECK_STEPS on one notebook, in place."""
        return run_steps(self, Submission(notebook.parent.name, notebook), CHECK_STEPS)

    def close(self) -> None:
        self.workers.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Grader(NotebookRunner):
    """The instructor's grader: adds the rubric (from source/), the trusted checks and their test data."""

    probes = PROBE_NAMES

    def __init__(self, course: Course, **options):
        super().__init__(course, **options)
        try:
            self.rubric = load_rubric(course.source_notebook)
            missing = [c.grade_id for c in self.rubric.autograded if c.grade_id not in CHECKS]
            if missing:
                raise RuntimeError(f"autograded cells without a trusted check in the grader: {missing}")
            self.x_train, self.y_train, self.x_test, self.y_test = load_subset(self.environment.mnist)
            self.rows = RowIndex(self.x_train, self.x_test)
        except BaseException:  # the workers have started: stop them before giving up
            self.close()
            raise

    def link_guard(self, submission: Submission) -> Path | None:
        return submission.folder.parent

    def grade(self, student: str, steps: tuple[Step[Grader], ...] = GRADING_STEPS) -> Submission:
        return run_steps(self, Submission(student, self.notebook_of(student)), steps)

    def notebook_of(self, student: str) -> Path:
        course = self.environment.course
        return course.submitted_notebook(student)

    def failed(self, student: str, why: str, rule: str | None = None) -> Submission:
        """A submission the grader itself could not grade: nothing scores, a person looks when `rule`."""
        submission = Submission(student, self.notebook_of(student), failure=why, failure_rule=rule, notes=[why])
        return run_steps(self, submission, (score_step, list_review, write_report))
