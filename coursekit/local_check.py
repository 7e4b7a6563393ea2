"""A student's local check: run one notebook the way the grader does (the pipeline's CHECK_STEPS:
sanitized, the static scan, sandboxed where bubblewrap exists, the run-time guard) and say what to
fix. Only the notebook's visible tests count here; the grader's trusted checks run at grading time."""
from __future__ import annotations

from pathlib import Path

from coursekit.config import Course
from coursekit.grading.pipeline import NotebookRunner, Submission
from coursekit.grading.rubric import cell_parts, nbgrader_meta


def visible_tests(submission: Submission) -> list[tuple[str, str, float, str]]:
    """(part, grade_id, points, status) for each test cell of the notebook, from the run log."""
    notebook, cells = submission.clean.notebook, submission.execution.log.cells
    return [(part, nbgrader_meta(cell).get("grade_id", "?"), float(nbgrader_meta(cell).get("points", 0)),
             cells.get(index, "not run"))
            for index, (cell, part) in enumerate(zip(notebook.cells, cell_parts(notebook))) if is_test_cell(cell)]


def is_test_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("grade")) and not nbgrader_meta(cell).get("solution")


def print_tests(tests: list[tuple[str, str, float, str]]) -> float:
    """Print each visible test's status under its part; return the points that pass."""
    current_part, passed = None, 0.0
    for part, grade_id, points, status in tests:
        if part != current_part:
            print(f"\n{part}")
            current_part = part
        if status == "ok":
            passed += points
            print(f"  ok    {grade_id} ({points:g} points): visible tests pass")
        else:
            print(f"  FIX   {grade_id} ({points:g} points): {status}")
    return passed


def print_section(title: str, tag: str, lines: list[str]) -> None:
    if lines:
        print(f"\n{title}")
        for line in lines:
            print(f"  {tag:<5} {line}")


def print_policy(submission: Submission) -> None:
    violations = [f"cell {v.cell}" + (f", line {v.line}" if v.line else "") + f": {v.message}"
                  for v in submission.violations]
    print_section("Not allowed by the assignment's rules (each costs the points of the parts it touches):",
                  "FIX", violations)
    print_section("The grader will flag these for a person to review:", "NOTE",
                  [f"cell {f.cell}, line {f.line}: {f.message}" for f in submission.findings if f.severity != "violation"])


def check_locally(notebook: Path, course: Course) -> int:
    """Print what to fix; 0 when every visible test passes and nothing breaks the rules."""
    with NotebookRunner(course) as runner:
        print(f"Checking {notebook} the way the grader will"
              f"{'' if runner.sandbox.isolated else ' (without a sandbox: bubblewrap is not installed)'}...")
        submission = runner.check_locally(notebook)
    if submission.failure:
        print(f"\n{submission.failure}.\nFix that first: nothing else can be graded.")
        return 1
    tests = visible_tests(submission)
    passed, total = print_tests(tests), sum(points for _, _, points, _ in tests)
    print_policy(submission)
    tested = {index for index, cell in enumerate(submission.clean.notebook.cells) if is_test_cell(cell)}
    shown = {f"cell {index}: {status}" for index, status in submission.execution.log.cells.items() if index in tested}
    print_section("While running your notebook:", "NOTE",
                  [note for note in submission.notes if note not in shown])
    print(f"\nVisible tests: {passed:g} of {total:g} autograded points pass. The grader also runs hidden checks "
          "on your functions and recomputes your models' test accuracy itself; answers in words are graded by hand.")
    return 0 if passed == total and not submission.violations else 1
