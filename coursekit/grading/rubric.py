"""The rubric, read from the one source of truth: the nbgrader metadata of the source notebook."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

PART_HEADING = re.compile(r"^##\s+(Part \d+|Optional extension)", re.MULTILINE)


@dataclass(frozen=True)
class GradedCell:
    grade_id: str
    points: float
    autograded: bool  # False: a manually graded answer
    part: str


@dataclass(frozen=True)
class Rubric:
    cells: tuple[GradedCell, ...]

    @property
    def autograded(self) -> tuple[GradedCell, ...]:
        return tuple(cell for cell in self.cells if cell.autograded)

    @property
    def manual(self) -> tuple[GradedCell, ...]:
        return tuple(cell for cell in self.cells if not cell.autograded)

    @property
    def total(self) -> float:
        return sum(cell.points for cell in self.cells)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_test_cell(cell) -> bool:
    """A cell of autograder tests (nbgrader's "Autograder tests"): graded, and not an answer. The
    rubric's autograded parts, the local check's visible tests, the provided code the scan is given
    (without them) all use this one definition."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution")


def cell_parts(notebook) -> list[str]:
    """The part each cell belongs to, from the `## Part N` headings above it."""
    parts, current = [], "Introduction"
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            match = PART_HEADING.search(cell.source)
            if match:
                current = match.group(1)
        parts.append(current)
    return parts


def load_rubric(source_notebook: Path) -> Rubric:
    notebook = nbformat.read(source_notebook, as_version=4)
    graded = []
    for cell, part in zip(notebook.cells, cell_parts(notebook)):
        meta = nbgrader_meta(cell)
        if meta.get("grade"):
            graded.append(GradedCell(meta["grade_id"], float(meta.get("points", 0)), autograded=is_test_cell(cell),
                                     part=part))
    return Rubric(tuple(graded))
