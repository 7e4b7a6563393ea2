"""A student's local check: run one notebook the way the grader does (sanitized, sandboxed where
bubblewrap exists, the no-autograd scan) and say what to fix. Only the visible tests count here;
the grader's hidden checks run at grading time."""
from __future__ import annotations

from pathlib import Path

from coursekit.grading.pipeline import Course, NotebookRunner, run_problems
from coursekit.grading.rubric import cell_parts, nbgrader_meta
from coursekit.grading.sanitize import UnreadableSubmission
from coursekit.grading.score import guard_violations, violations_from


def visible_test_results(clean, log) -> list[tuple[str, str, float, str]]:
    """(part, grade_id, points, status) for each test cell, from the run log."""
    results = []
    for index, (cell, part) in enumerate(zip(clean.notebook.cells, cell_parts(clean.notebook))):
        meta = nbgrader_meta(cell)
        if meta.get("grade") and not meta.get("solution"):
            record = log.get("cells", {}).get(str(index), {})
            status = record.get("status", "not run") if isinstance(record, dict) else "not run"
            results.append((part, meta.get("grade_id", "?"), float(meta.get("points", 0)), status))
    return results


def check_notebook(notebook: Path, course: Course) -> int:
    with NotebookRunner(course) as runner:
        print(f"Checking {notebook} the way the grader will"
              f"{'' if runner.sandbox.isolated else ' (without a sandbox: bubblewrap is not installed)'}...")
        try:
            clean, findings = runner.prepare(notebook)
        except UnreadableSubmission as error:
            print(f"\nThe grader could not read your notebook: {error}.\nFix that first: nothing else can be graded.")
            return 1
        execution = runner.run(clean, notebook.parent, probes=())
        policy = runner.policy
    results = visible_test_results(clean, execution.log)
    current_part, passed, total = None, 0.0, 0.0
    for part, grade_id, points, status in results:
        if part != current_part:
            print(f"\n{part}")
            current_part = part
        total += points
        if status == "ok":
            passed += points
            print(f"  ok    {grade_id} ({points:g} points): visible tests pass")
        else:
            print(f"  FIX   {grade_id} ({points:g} points): {status}")
    violations = [f for f in findings if f.severity == "violation"]
    if violations:
        print("\nNot allowed by the assignment's rules (each costs the points of the parts it touches):")
        for f in violations:
            print(f"  FIX   cell {f.cell}, line {f.line}: {f.message}")
    runtime = execution.log.get("runtime_violations", []) if policy.no_autograd else []
    for entry in runtime:
        print(f"  FIX   after cell {entry.get('cell')}, autograd was in use: {entry.get('found')}")
    guarded = guard_violations(execution.log, clean.editable, violations_from(findings, [], clean.editable))
    for violation in guarded:
        print(f"  FIX   cell {violation.cell}" + (f", line {violation.line}" if violation.line else "")
              + f": {violation.message}")
    review = [f for f in findings if f.severity != "violation"]
    if review:
        print("\nThe grader will flag these for a person to review:")
        for f in review:
            print(f"  NOTE  cell {f.cell}, line {f.line}: {f.message}")
    notes = clean.notes + execution.notes + [p for p in run_problems(execution.log, execution.completed)
                                             if not any(p.startswith(f"cell {i}:") for i in test_cell_indexes(clean))]
    if notes:
        print("\nWhile running your notebook:")
        for note in notes:
            print(f"  NOTE  {note}")
    print(f"\nVisible tests: {passed:g} of {total:g} autograded points pass. The grader also runs hidden checks "
          "on your functions and recomputes your models' test accuracy itself; answers in words are graded by hand.")
    return 0 if passed == total and not violations and not runtime and not guarded else 1


def test_cell_indexes(clean) -> set[int]:
    return {i for i, cell in enumerate(clean.notebook.cells)
            if nbgrader_meta(cell).get("grade") and not nbgrader_meta(cell).get("solution")}
