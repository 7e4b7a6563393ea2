"""Score step: turn the trusted checks' outcomes into points, applying the no-autograd policy."""
from __future__ import annotations

from dataclasses import dataclass, field

from coursekit.grading.checks import CHECKS, CheckLine, Context, run_check
from coursekit.grading.policy import Violation
from coursekit.grading.rubric import Rubric


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


def describe(violations: list[Violation]) -> list[CheckLine]:
    """One line per cell: where, and the first thing found there."""
    by_cell: dict[int, list[Violation]] = {}
    for violation in violations:
        by_cell.setdefault(violation.cell, []).append(violation)
    lines = []
    for cell, found in sorted(by_cell.items()):
        where = sorted({v.line for v in found if v.line})
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        lines.append(
            CheckLine(
                False,
                f"policy violation in cell {cell}"
                + (f", line {', '.join(map(str, where))}" if where else "")
                + f": {found[0].message}{more}",
            )
        )
    return lines


def costed_parts(violations: list[Violation]) -> dict[str, list[Violation]]:
    """grade_id -> the violations that cost that part its points (the grader's rule; the student's
    local check uses it too, so both cost the same parts)."""
    costed: dict[str, list[Violation]] = {}
    for grade_id, check in CHECKS.items():
        touched = [v for v in violations if check.uses.intersection(v.touches)]
        if touched:
            costed[grade_id] = touched
    return costed


def score(
    rubric: Rubric, ctx: Context | None, violations: list[Violation], failure: str | None = None
) -> list[PartResult]:
    """One PartResult per graded cell. `failure` (nothing could run) zeroes every autograded part."""
    results, costed = [], costed_parts(violations)
    for cell in rubric.cells:
        if not cell.autograded:
            results.append(PartResult(cell.grade_id, cell.part, 0.0, cell.points, pending=True))
            continue
        if failure or ctx is None:
            results.append(
                PartResult(cell.grade_id, cell.part, 0.0, cell.points, [CheckLine(False, failure or "not run")])
            )
            continue
        outcome = run_check(cell.grade_id, ctx)
        touched = costed.get(cell.grade_id, [])
        if touched:
            results.append(PartResult(cell.grade_id, cell.part, 0.0, cell.points, describe(touched) + outcome.lines))
        else:
            results.append(PartResult(cell.grade_id, cell.part, round(cell.points * outcome.fraction, 2), cell.points,
                                      outcome.lines))
    return results
