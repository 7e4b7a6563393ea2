"""The grading pipeline: sanitize -> execute (sandboxed) -> scan -> probe -> score -> report.

`Grader` holds what every submission shares (rubric, release skeleton, the grader's test data,
the sandbox); `Grader.grade` runs one submission and never raises for a bad submission.
"""
from __future__ import annotations

import hashlib
import os
import queue
import secrets
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from coursekit import ASSIGNMENT
from coursekit.data import load_subset, provision
from coursekit.grading.checks import CHECKS, Context
from coursekit.grading.execute import Execution, execute, new_worker, walk_files
from coursekit.grading.probe_data import PROBE_NAMES
from coursekit.grading.rubric import load_rubric, nbgrader_meta
from coursekit.grading.bubblewrap import Limits, Sandbox, Worker, WorkerFailed, python_read_only_paths
from coursekit.grading.sanitize import RefusedLink, Sanitized, UnreadableSubmission, read_submission, sanitize
from coursekit.grading.scan import Finding, ScanPolicy, scan_cells
from coursekit.grading.score import TestResult, Violation, guard_violations, score, violations_from


@dataclass(frozen=True)
class Course:
    root: Path
    assignment: str = ASSIGNMENT

    @property
    def notebook_name(self) -> str:
        return f"{self.assignment}.ipynb"

    @property
    def source_notebook(self) -> Path:
        return self.root / "source" / self.assignment / self.notebook_name

    @property
    def release_notebook(self) -> Path:
        return self.root / "release" / self.assignment / self.notebook_name

    def submission(self, student: str) -> Path:
        return self.root / "submitted" / student / self.assignment

    def students(self) -> list[str]:
        folder = self.root / "submitted"
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def config(self) -> dict:
        path = self.root / "course.toml"
        return tomllib.loads(path.read_text()) if path.is_file() else {}

    def limits(self) -> Limits:
        section = self.config().get("limits", {})
        defaults = Limits()
        return Limits(memory_bytes=int(section.get("memory_gib", defaults.memory_bytes / 2**30) * 2**30),
                      notebook_seconds=int(section.get("notebook_seconds", defaults.notebook_seconds)),
                      cell_seconds=int(section.get("cell_seconds", defaults.cell_seconds)),
                      processes=int(section.get("processes", defaults.processes)),
                      output_bytes=int(section.get("output_bytes", defaults.output_bytes)))

    def policy(self) -> ScanPolicy:
        return ScanPolicy(no_autograd=bool(self.config().get("policy", {}).get("no_autograd", True)))


@dataclass
class ReviewItem:
    """Something a person should look at: a policy violation, or what the scan flags for review."""
    severity: str       # "violation" | "review"
    rule: str
    cell: int | None
    line: int | None
    code: str           # the line of the student's code, when known
    message: str


def review_items(violations: list[Violation], findings: list[Finding], editable: list,
                 imported: list | None = None) -> list[ReviewItem]:
    """Violations, scan flags, and data the student's code deserialised (the run log's `imported_data`)."""
    sources = {c.index: c.source.splitlines() for c in editable}

    def code(cell, line):
        lines = sources.get(cell, [])
        return lines[line - 1].strip()[:200] if isinstance(line, int) and 0 < line <= len(lines) else ""

    items = [ReviewItem("violation", v.rule, v.cell, v.line, code(v.cell, v.line), v.message) for v in violations]
    items += [ReviewItem("review", f.rule, f.cell, f.line, code(f.cell, f.line), f.message)
              for f in findings if f.severity != "violation"]
    for load in (entry for entry in imported or [] if isinstance(entry, dict) and isinstance(entry.get("cell"), int)):
        if load.get("dynamic") or load["cell"] in sources:
            line = None if load.get("dynamic") else load.get("line")
            items.append(ReviewItem("review", "imported-data", load["cell"], line, code(load["cell"], line),
                                    f"`{str(load.get('api'))[:80]}` loaded data while your code ran: "
                                    "a person checks where it came from"))
    return items


@dataclass
class SubmissionResult:
    student: str
    tests: list[TestResult]
    notes: list[str] = field(default_factory=list)          # sanitize/execute remarks and run problems
    findings: list[Finding] = field(default_factory=list)   # static scan
    violations: list[Violation] = field(default_factory=list)
    review: list[ReviewItem] = field(default_factory=list)
    executed: nbformat.NotebookNode | None = None
    seconds: float = 0.0
    sandbox_seconds: float = 0.0
    peak_memory_bytes: int | None = None

    @property
    def score(self) -> float:
        return round(sum(t.score for t in self.tests if not t.pending), 2)

    @property
    def max_autograded(self) -> float:
        return sum(t.max_score for t in self.tests if not t.pending)


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


def run_problems(log: dict, completed) -> list[str]:
    """What went wrong while running, in words for the student."""
    problems = []
    cells = log.get("cells") if isinstance(log.get("cells"), dict) else {}  # run.json is untrusted data
    for index, record in sorted(cells.items(), key=lambda item: str(item[0]).zfill(9)):
        status = str(record.get("status", "")) if isinstance(record, dict) else ""
        if status and status != "ok":
            problems.append(f"cell {index}: {status}")
    if log.get("notebook_timed_out"):
        problems.append("the notebook reached its time limit; the remaining cells were skipped")
    if isinstance(log.get("probes"), dict) and log["probes"].get("aborted"):
        problems.append(f"grading stopped early: {log['probes']['aborted']}")
    if completed.out_of_memory:
        problems.append("the notebook ran out of memory (the sandbox's limit) and was stopped")
    if completed.timed_out:
        problems.append("the run exceeded the grader's hard time limit and was stopped")
    elif completed.returncode != 0 and not log:
        problems.append(f"the notebook's process was stopped (exit status {completed.returncode}) before it reported anything")
    return problems


class NotebookRunner:
    """What checking any notebook needs: the release skeleton, the policy, limits, and `workers` warm
    sandboxed workers (started at once, in the background). Use it as a context manager: its workers
    and their folders are gone when the block ends, however it ends."""

    def __init__(self, course: Course, require_sandbox: bool = False, threads: int = 1, mpl_cache: Path | None = None,
                 workers: int = 1):
        self.course = course
        self.release = nbformat.read(course.release_notebook, as_version=4)
        self.preamble = "\n".join(cell.source for cell in self.release.cells if cell.cell_type == "code"
                                  and nbgrader_meta(cell).get("locked") and not nbgrader_meta(cell).get("grade"))
        self.policy = course.policy()
        self.limits = course.limits()
        self.mnist = provision(online=False, progress=False)
        self.sandbox = Sandbox([*python_read_only_paths(), self.mnist], require=require_sandbox)
        self.closing = False
        self.workers = [new_worker(self.sandbox, self.limits, self.mnist, threads, mpl_cache) for _ in range(workers)]
        self.idle_workers: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self.starting: list[threading.Thread] = []
        try:
            for worker in self.workers:
                worker.launch()
        except BaseException:
            self.close()
            raise
        self.starting = [threading.Thread(target=self.when_ready, args=(worker,), daemon=True) for worker in self.workers]
        for thread in self.starting:  # the workers import their libraries while the grader loads its own data
            thread.start()

    def when_ready(self, worker: Worker) -> None:
        try:
            worker.wait_until_ready()
        except WorkerFailed as error:  # retried by the first run that gets this worker, and reported there
            if not self.closing:
                print(error, file=sys.stderr)
        finally:
            self.idle_workers.put(worker)

    def prepare(self, notebook: Path, top: Path | None = None) -> tuple[Sanitized, list[Finding]]:
        """Sanitize and scan; raises UnreadableSubmission. With `top` (the student's folder), nothing
        is read through a link."""
        clean = sanitize(read_submission(notebook, top), self.release)
        return clean, scan_cells([(c.index, c.source) for c in clean.editable], self.policy, self.preamble)

    def run(self, clean: Sanitized, folder: Path, probes: tuple[str, ...] = PROBE_NAMES) -> Execution:
        """Run in the next idle worker."""
        worker = self.idle_workers.get()
        try:
            return execute(clean.notebook, folder, self.course.notebook_name, worker, seed=secrets.randbits(31),
                           probes=probes, no_autograd=self.policy.no_autograd)
        finally:
            self.idle_workers.put(worker)

    def close(self) -> None:
        """Stop the workers (those still starting too) and remove their folders."""
        self.closing = True
        for worker in self.workers:
            worker.close()
        for thread in self.starting:
            thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Grader(NotebookRunner):
    """The instructor's grader: adds the rubric (from source/), the trusted checks and their test data."""

    def __init__(self, course: Course, **options):
        super().__init__(course, **options)
        try:
            self.rubric = load_rubric(course.source_notebook)
            missing = [c.grade_id for c in self.rubric.autograded if c.grade_id not in CHECKS]
            if missing:
                raise RuntimeError(f"autograded cells without a trusted check in the grader: {missing}")
            self.x_train, self.y_train, self.x_test, self.y_test = load_subset(self.mnist)
        except BaseException:  # the workers have started: stop them before giving up
            self.close()
            raise

    def grade(self, student: str) -> SubmissionResult:
        start = time.monotonic()
        folder = self.course.submission(student)
        before = tree_digest(folder)
        result = self.grade_folder(student, folder)
        if tree_digest(folder) != before:
            result.notes.append("GRADER ERROR: the submission folder changed during grading")
        result.seconds = time.monotonic() - start
        return result

    def grade_folder(self, student: str, folder: Path) -> SubmissionResult:
        try:
            clean, findings = self.prepare(folder / self.course.notebook_name, top=folder.parent)
        except UnreadableSubmission as error:
            review = "link" if isinstance(error, RefusedLink) else None
            return self.failed(student, f"Your notebook could not be read: {error}", review)
        execution = self.run(clean, folder)
        runtime = execution.log.get("runtime_violations", []) if self.policy.no_autograd else []
        violations = violations_from(findings, runtime if isinstance(runtime, list) else [], clean.editable)
        violations += guard_violations(execution.log, clean.editable, violations)
        imported = execution.log.get("imported_data") if isinstance(execution.log.get("imported_data"), list) else []
        ctx = Context(execution.outputs, execution.inputs, self.x_test, self.y_test, self.x_train, self.y_train)
        return SubmissionResult(student, score(self.rubric, ctx, violations),
                                clean.notes + execution.notes + run_problems(execution.log, execution.completed),
                                findings, violations, review_items(violations, findings, clean.editable, imported),
                                execution.executed, sandbox_seconds=execution.completed.seconds,
                                peak_memory_bytes=execution.completed.peak_memory_bytes)

    def failed(self, student: str, why: str, review: str | None = None) -> SubmissionResult:
        """Nothing could be graded; `review` names the rule when a person should look (a refused link)."""
        items = [ReviewItem("review", review, None, None, "", why)] if review else []
        return SubmissionResult(student, score(self.rubric, None, [], failure=why), [why], review=items)
