"""Score step: turn the trusted checks' outcomes into points, applying the no-autograd policy."""
from __future__ import annotations

from dataclasses import dataclass, field

from coursekit.grading.checks import CHECKS, CheckLine, Context, run_check
from coursekit.grading.rubric import Rubric
from coursekit.grading.sanitize import EditableCell
from coursekit.grading.scan import Finding
from coursekit.in_sandbox.protocol import RunLog


@dataclass
class Violation:
    owner: str | None   # the solution cell it belongs to
    cell: int
    line: int | None
    message: str
    rule: str = "autograd-at-run-time"


@dataclass
class PartResult:
    """The points of one graded cell and the sub-checks that decided them."""
    grade_id: str
    part: str
    score: float
    max_score: float
    lines: list[CheckLine] = field(default_factory=list)
    pending: bool = False  # manually graded

    @property
    def passed(self) -> bool:
        return not self.pending and self.score >= self.max_score


def owner_of_cell(editable: list[EditableCell], cell: int) -> str | None:
    """The solution cell that a notebook cell's code belongs to: the nearest editable cell at or above it."""
    above = [c for c in editable if c.index <= cell]
    return (above[-1] if above else editable[0]).owner if editable else None


def violations_from(findings: list[Finding], runtime: list[dict], editable: list[EditableCell]) -> list[Violation]:
    by_index = {c.index: c.owner for c in editable}
    found = [Violation(by_index.get(f.cell), f.cell, f.line, f.message, f.rule) for f in findings if f.severity == "violation"]
    for entry in (e for e in runtime if isinstance(e, dict)):
        cell = entry.get("cell") if isinstance(entry.get("cell"), int) else -1
        found.append(Violation(owner_of_cell(editable, cell), cell, None,
                               f"after this cell ran, autograd was in use: {str(entry.get('found'))[:300]}"))
    return found


GUARD_RULES = {"torch-nn": "torch.nn is not allowed", "ready-made": "ready-made softmax and losses are not allowed",
               "autograd": "autograd is not allowed", "torch-optim": "torch.optim is not allowed"}


def guard_violations(log: RunLog, editable: list[EditableCell], static: list[Violation]) -> list[Violation]:
    """The run-time guard's records: forbidden calls made by the student's code (in an editable cell,
    or by code created at run time), except where the static scan already reported that line."""
    cells, reported = {c.index for c in editable}, {(v.cell, v.line) for v in static}
    found = []
    for call in (c for c in log.forbidden_calls if isinstance(c.get("cell"), int)):
        cell, line, rule, dynamic = call["cell"], call.get("line"), call.get("rule"), bool(call.get("dynamic"))
        if rule not in GUARD_RULES or not (dynamic or cell in cells) or (cell, line) in reported:
            continue
        how = "by code created at run time (exec, eval...) " if dynamic else ""
        found.append(Violation(owner_of_cell(editable, cell), cell, None if dynamic else line,
                               f"`{str(call.get('api'))[:100]}` was called {how}while your code ran: {GUARD_RULES[rule]}",
                               f"runtime-{rule}"))
    removed = log.guard_removed_at
    if removed is not None:
        found.append(Violation(owner_of_cell(editable, removed), removed, None,
                               "the grader's run-time guard was removed or disabled by your code", "runtime-guard-removed"))
    return found


def describe(violations: list[Violation]) -> list[CheckLine]:
    """One line per cell: where, and the first thing found there."""
    by_cell: dict[int, list[Violation]] = {}
    for violation in violations:
        by_cell.setdefault(violation.cell, []).append(violation)
    lines = []
    for cell, found in sorted(by_cell.items()):
        where = sorted({v.line for v in found if v.line})
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        lines.append(CheckLine(False, f"policy violation in cell {cell}" + (f", line {', '.join(map(str, where))}" if where else "")
                               + f": {found[0].message}{more}"))
    return lines


def costed_parts(violations: list[Violation]) -> dict[str, list[Violation]]:
    """grade_id -> the violations that cost that part its points (the grader's rule; the student's
    local check uses it too, so both cost the same parts)."""
    costed: dict[str, list[Violation]] = {}
    for grade_id, check in CHECKS.items():
        touched = [v for v in violations if v.owner in check.solutions]
        if touched:
            costed[grade_id] = touched
    return costed


def score(rubric: Rubric, ctx: Context | None, violations: list[Violation], failure: str | None = None) -> list[PartResult]:
    """One PartResult per graded cell. `failure` (nothing could run) zeroes every autograded part."""
    results, costed = [], costed_parts(violations)
    for cell in rubric.cells:
        if not cell.autograded:
            results.append(PartResult(cell.grade_id, cell.part, 0.0, cell.points, pending=True))
            continue
        if failure or ctx is None:
            results.append(PartResult(cell.grade_id, cell.part, 0.0, cell.points, [CheckLine(False, failure or "not run")]))
            continue
        outcome = run_check(cell.grade_id, ctx)
        touched = costed.get(cell.grade_id, [])
        if touched:
            results.append(PartResult(cell.grade_id, cell.part, 0.0, cell.points, describe(touched) + outcome.lines))
        else:
            results.append(PartResult(cell.grade_id, cell.part, round(cell.points * outcome.fraction, 2), cell.points,
                                      outcome.lines))
    return results
