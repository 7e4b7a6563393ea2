"""A student's local check: run one notebook the way the grader does (the pipeline's CHECK_STEPS:
sanitized, the static scan, sandboxed where bubblewrap exists, the run-time guard) and say what to
fix. The notebook's visible tests count here, and a violation costs the parts the grader's own rule
(`costed_parts`) says it costs; the grader's hidden checks run at grading time.

Exit status: 0 when everything passes, 1 when there is something to fix (a result, not an error)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coursekit.config import Course
from coursekit.grading.pipeline import NotebookRunner
from coursekit.grading.policy import Violation
from coursekit.grading.record import Submission
from coursekit.grading.rubric import cell_parts, is_test_cell, nbgrader_meta
from coursekit.grading.score import costed_parts
from coursekit.in_sandbox.protocol import Status

SOMETHING_TO_FIX = 1
NOT_RUN = Status("not-run")


@dataclass(frozen=True)
class VisibleTest:
    part: str
    grade_id: str
    points: float
    status: Status  # from the run log
    cell: int


def visible_tests(submission: Submission) -> list[VisibleTest]:
    """Each test cell of the notebook, with its status from the run log."""
    # print_report calls this only without a failure: the notebook was read and run
    assert submission.clean is not None and submission.execution is not None
    notebook, cells = submission.clean.notebook, submission.execution.log.cells
    return [VisibleTest(part, nbgrader_meta(cell).get("grade_id", "?"), float(nbgrader_meta(cell).get("points", 0)),
                        cells.get(index, NOT_RUN), index)
            for index, (cell, part) in enumerate(zip(notebook.cells, cell_parts(notebook))) if is_test_cell(cell)]


def cell_label(submission: Submission, index: int | None) -> str:
    """A cell as the student finds it in Jupyter: its place from the top (markdown cells included)
    and its first line."""
    # print_report calls this only without a failure: the notebook was read and run
    assert submission.clean is not None
    cells = submission.clean.notebook.cells
    if index is None or not 0 <= index < len(cells):
        return "a cell"
    first = next((line.strip() for line in str(cells[index].source).splitlines() if line.strip()), "")
    return f'cell {index + 1} from the top ("{first[:80]}{"..." if len(first) > 80 else ""}")'


def print_tests(submission: Submission, tests: list[VisibleTest], costed: dict[str, list[Violation]]) -> float:
    """Print each visible test's status under its part; return the points it would keep."""
    current_part, kept = None, 0.0
    for test in tests:
        if test.part != current_part:
            print(f"\n{test.part}")
            current_part = test.part
        head = f"{test.grade_id} ({test.points:g} points)"
        if test.grade_id in costed:
            where = sorted({cell_label(submission, v.cell) for v in costed[test.grade_id]})
            print(f"  LOST  {head}: a forbidden call in {', '.join(where)} costs this part (see below)")
        elif test.status.ok:
            kept += test.points
            print(f"  ok    {head}: visible tests pass")
        else:
            print(f"  FIX   {head}: {test.status.sentence()}")
    return kept


def print_section(title: str, tag: str, lines: list[str]) -> None:
    if lines:
        print(f"\n{title}")
        for line in lines:
            print(f"  {tag:<5} {line}")


def print_policy(submission: Submission, costed: dict[str, list[Violation]]) -> None:
    def parts_of(violation: Violation) -> str:
        return ", ".join(grade_id for grade_id, found in costed.items() if violation in found) or "no graded part"

    violations = [f"{cell_label(submission, v.cell)}" + (f", line {v.line}" if v.line else "")
                  + f": {v.message} (costs {parts_of(v)})" for v in submission.violations]
    print_section("Not allowed by the assignment's rules; the grader takes these parts' points:", "FIX", violations)
    print_section("The grader will flag these for a person from the course staff to look at:", "NOTE",
                  [f"{cell_label(submission, f.cell)}, line {f.line}: {f.message}"
                   for f in submission.findings if f.severity != "violation"])


def run_notes(submission: Submission, tests: list[VisibleTest]) -> list[str]:
    """What happened while running, except the test cells' own statuses (shown with the tests)."""
    # print_report calls this only without a failure: the notebook was read and run
    assert submission.clean is not None and submission.execution is not None
    execution, tested = submission.execution, {test.cell for test in tests}
    notes = submission.clean.notes + execution.notes
    notes += [f"{cell_label(submission, cell)}: {what}" if cell is not None else what
              for cell, what in execution.log.problems() if cell not in tested]
    if execution.completed.out_of_memory:
        notes.append("the notebook ran out of memory (the sandbox's limit) and was stopped")
    if execution.completed.timed_out:
        notes.append("the run exceeded the grader's hard time limit and was stopped")
    return notes


def check_locally(notebook: Path, course: Course) -> int:
    """Print what to fix; 0 when every visible test passes and nothing breaks the rules."""
    with NotebookRunner(course) as runner:
        print(f"Checking {notebook} the way the grader will"
              f"{'' if runner.sandbox.isolated else ' (without a sandbox: bubblewrap is not installed)'}...")
        submission = runner.check_locally(notebook)
    return print_report(submission)


def print_report(submission: Submission) -> int:
    if submission.failure:
        print(f"\n{submission.failure}.\nFix that first: nothing else can be graded.")
        return SOMETHING_TO_FIX
    tests, costed = visible_tests(submission), costed_parts(submission.violations)
    kept, total = print_tests(submission, tests, costed), sum(test.points for test in tests)
    print_policy(submission, costed)
    print_section("While running your notebook:", "NOTE", run_notes(submission, tests))
    print(f"\nVisible tests: {kept:g} of {total:g} autograded points pass"
          f"{' (parts that break the rules count 0, as in grading)' if costed else ''}. The grader also runs "
          "hidden checks on your functions and recomputes your models' test accuracy itself; answers in words "
          "are graded by hand.")
    return 0 if kept == total and not submission.violations else SOMETHING_TO_FIX
